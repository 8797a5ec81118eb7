//! `route-tables DIR OUT`: reads every `DIR/<name>.toml`, checks each with
//! [`RouteTable::from_json`] (the checker the Worker runs again at start-up) and writes `OUT`,
//! an ES module whose default export maps each name to its table as JSON text. The Worker
//! bundles it, and the wrangler var `ROUTE_TABLE` picks one. A bad table fails here, so it
//! fails `edge-validator/build-worker`, `wrangler deploy --dry-run` and `deploy/check`, not
//! production.
//!
//! TOML is read here, natively, and only JSON reaches the bundle: the Worker parses it with
//! `shared`'s small JSON reader instead of linking a TOML parser.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use shared::route::RouteTable;

/// Why a table directory could not be compiled (each names its file).
#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: not TOML: {1}")]
    Toml(PathBuf, toml::de::Error),
    #[error("{0}: {1}")]
    Table(PathBuf, shared::route::RouteError),
    #[error("{0}: the file name must be a table name (a-z, 0-9, `-`, `_`) with .toml")]
    Name(PathBuf),
    #[error("{0}: cannot write: {1}")]
    Write(PathBuf, std::io::Error),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out] = args.as_slice() else {
        eprintln!("usage: route-tables DIR OUT.js");
        return ExitCode::from(2);
    };
    match compile(Path::new(dir)).and_then(|tables| write(Path::new(out), &tables)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("route table refused: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Every table of `dir`, checked, by name, as JSON text.
fn compile(dir: &Path) -> Result<BTreeMap<String, String>, BuildError> {
    let mut tables = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|err| BuildError::Read(dir.into(), err))?;
    for entry in entries {
        let path = entry
            .map_err(|err| BuildError::Read(dir.into(), err))?
            .path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let name = table_name(&path).ok_or_else(|| BuildError::Name(path.clone()))?;
        let text =
            std::fs::read_to_string(&path).map_err(|err| BuildError::Read(path.clone(), err))?;
        let value: serde_json::Value =
            toml::from_str(&text).map_err(|err| BuildError::Toml(path.clone(), err))?;
        let json = value.to_string();
        let table =
            RouteTable::from_json(&json).map_err(|err| BuildError::Table(path.clone(), err))?;
        println!("route table {name}: {} routes", table.routes().len());
        tables.insert(name, json);
    }
    Ok(tables)
}

/// `dir/<name>.toml`'s name, if it is one.
fn table_name(path: &Path) -> Option<String> {
    let name = path.file_stem()?.to_str()?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    valid.then(|| name.to_owned())
}

/// The module: JSON is valid JS, so names and tables are written as JSON strings.
fn write(out: &Path, tables: &BTreeMap<String, String>) -> Result<(), BuildError> {
    let map: serde_json::Map<String, serde_json::Value> = tables
        .iter()
        .map(|(name, json)| (name.clone(), serde_json::Value::String(json.clone())))
        .collect();
    let module = format!(
        "// Written by edge-validator/route-tables from deploy/edge/routes/: do not edit.\nexport default {};\n",
        serde_json::Value::Object(map)
    );
    std::fs::write(out, module).map_err(|err| BuildError::Write(out.into(), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_tables_compile_and_a_bad_one_is_refused_with_its_file() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/edge/routes");
        let tables = compile(&shipped).expect("the shipped tables are good");
        assert!(tables.contains_key("local"), "{tables:?}");

        let dir = std::env::temp_dir().join(format!("route-tables-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(
            &bad,
            "[[route]]\nid = \"a\"\npath = \"/a\"\nscope = [\"x\"]\n",
        )
        .unwrap();
        let err = compile(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("bad.toml") && err.contains("scope"), "{err}");
    }

    /// The example in docs/edge.md is a table the build takes, with the routes it shows.
    #[test]
    fn the_documented_example_is_a_good_table() {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/edge.md");
        let doc = std::fs::read_to_string(doc).unwrap();
        let section = doc.split("## Route tables").nth(1).expect("the section");
        let example = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a TOML example");
        let value: serde_json::Value = toml::from_str(example).unwrap();
        let table = RouteTable::from_json(&value.to_string()).unwrap();
        let ids: Vec<&str> = table
            .routes()
            .iter()
            .map(|route| route.id.as_str())
            .collect();
        assert_eq!(ids.len(), 6, "{ids:?}");
        let payments = table.routes().iter().find(|route| route.id == "payments");
        assert!(payments.is_some_and(|route| route.policy.dpop_required));
        let path = shared::path::NormalPath::parse("/orders/export").unwrap();
        let route = table.route("api.example.com", "GET", &path).unwrap();
        assert_eq!(route.id, "old-export", "as the precedence paragraph says");
    }
}

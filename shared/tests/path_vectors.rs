//! The path-normalisation vectors (`path-vectors.json`): every classic gateway path confusion
//! either resolves to one spelling or is refused. The same file runs natively and in wasm
//! (`wasm-pack test --node`), and every normal spelling is checked to be a fixed point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use serde_json::Value;
use shared::NormalPath;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const VECTORS: &str = include_str!("path-vectors.json");

#[test]
fn every_path_vector_gets_its_spelling_or_its_error() {
    let file: Value = serde_json::from_str(VECTORS).unwrap();
    let vectors = file["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 40, "the file lost vectors");
    for vector in vectors {
        let name = vector["name"].as_str().unwrap();
        let raw = vector["raw"].as_str().unwrap();
        let got = NormalPath::parse(raw);
        match (vector["normal"].as_str(), vector["error"].as_str()) {
            (Some(normal), None) => {
                let path = got.unwrap_or_else(|err| panic!("{name}: refused with {err}"));
                assert_eq!(path.as_str(), normal, "{name}");
                let again = NormalPath::parse(normal).unwrap();
                assert_eq!(
                    again, path,
                    "{name}: the normal spelling is not a fixed point"
                );
            }
            (None, Some(error)) => {
                let err = got.err().unwrap_or_else(|| panic!("{name}: accepted"));
                assert_eq!(err.reason(), error, "{name}");
            }
            _ => panic!("{name}: a vector has `normal` or `error`"),
        }
    }
}

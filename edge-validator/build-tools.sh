# Sourced by edge-validator/build-worker (so wrangler's build works from a fresh clone) and by
# tests/setup.sh: installs what building the Worker needs, skipping what is there, and sets
# the tool paths. Only build tools: no services, nothing started. The Rust toolchain is pinned
# in rust-toolchain.toml, wasm-bindgen follows Cargo.lock, the JS tools package-lock.json.

# Tools installed by `cargo install` land here, also when CARGO_HOME is not the default.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

# The pinned toolchain with wasm32 (RUSTUP_AUTO_INSTALL may be off on CI machines).
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^$toolchain"; then
  step "installing Rust $toolchain"
  rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy
fi
for component in rustfmt clippy; do
  rustup component list --installed --toolchain "$toolchain" | grep -q "^$component" ||
    rustup component add "$component" --toolchain "$toolchain"
done
rustup target list --installed --toolchain "$toolchain" | grep -q '^wasm32-unknown-unknown$' ||
  rustup target add wasm32-unknown-unknown --toolchain "$toolchain"

# Node.js 20 or newer, with npm: wrangler and workerd (package-lock.json) need it. Debian
# bookworm's own package is Node 18 without npm, so it is not installed from here.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ] || ! command -v npm >/dev/null; then
  echo "Node.js 20 or newer with npm is needed (found: $(node --version 2>/dev/null || echo none)," \
    "npm $(npm --version 2>/dev/null || echo none)); install it, e.g. from NodeSource's apt" \
    "repository or Debian trixie's nodejs and npm packages, then run this again" >&2
  # Sourced: a shell that sourced it by hand stays open.
  return 1 2>/dev/null || exit 1
fi

# wasm-bindgen-cli must match the wasm-bindgen in Cargo.lock exactly (wasm-pack would
# otherwise try to download it).
bindgen_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $bindgen_version" ]; then
  step "installing wasm-bindgen-cli $bindgen_version"
  # Not --locked: its lock file names a webpki-roots release the registry does not serve
  # (measured: `cargo install --locked` fails to resolve); the version is pinned all the same.
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi

# JS-side tools pinned in package-lock.json (binaryen's wasm-opt, esbuild, workerd, wrangler).
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat node_modules/.lock-sha256 2>/dev/null)" != "$lock_sum" ]; then
  step "npm ci"
  npm ci --no-audit --no-fund
  echo "$lock_sum" > node_modules/.lock-sha256
fi
export PATH="$PWD/node_modules/.bin:$PATH"

# The tools edge-validator/build-worker runs: wasm-bindgen (above), wasm-opt and esbuild (npm).
export WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
export WASM_OPT_BIN="$PWD/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$PWD/node_modules/.bin/esbuild"

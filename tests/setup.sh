# Sourced by tests/run: installs the toolchain pieces the tests need, skipping what is there.
# Pinned versions live here and in rust-toolchain.toml; wasm-bindgen follows Cargo.lock.

WASM_PACK_VERSION=0.15.1

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

# Node runs the wasm tests and the package smoke test.
if ! command -v node >/dev/null; then
  step "installing Node.js (Debian)"
  apt-get update -qq && apt-get install -y -qq nodejs
fi

# Debian tools the tests run: gdnsd and dig (geo-DNS failover drill), psql (PostgreSQL
# tests create their databases with it).
missing=()
command -v gdnsd >/dev/null || missing+=(gdnsd)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
command -v psql >/dev/null || missing+=(postgresql-client)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (Debian)"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# Redis for the issuer's shared-limit tests (TEST_REDIS_URL, default the machine's server on
# 127.0.0.1:6379): found running, or installed and started here (nothing kept on disk).
if [ -z "${TEST_REDIS_URL:-}" ] && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if ! command -v redis-server >/dev/null; then
    step "installing redis-server (Debian)"
    apt-get update -qq && apt-get install -y -qq redis-server
  fi
  step "starting redis-server on 127.0.0.1:6379"
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes
fi

# wasm-pack, pinned.
if [ "$(wasm-pack --version 2>/dev/null)" != "wasm-pack $WASM_PACK_VERSION" ]; then
  step "installing wasm-pack $WASM_PACK_VERSION"
  cargo install --locked wasm-pack --version "$WASM_PACK_VERSION"
fi

# wasm-bindgen-cli must match the wasm-bindgen in Cargo.lock exactly (wasm-pack would
# otherwise try to download it).
bindgen_version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $bindgen_version" ]; then
  step "installing wasm-bindgen-cli $bindgen_version"
  cargo install wasm-bindgen-cli --version "$bindgen_version"
fi

# JS-side tools pinned in package-lock.json (binaryen's wasm-opt for wasm-pack).
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

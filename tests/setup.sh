# Sourced by tests/run (and the benchmarks, deploy/check, deploy/local/up): what building
# needs (edge-validator/build-tools.sh), then what the tests need beyond it, skipping what is
# there. Pinned versions live here, in build-tools.sh and in rust-toolchain.toml.

WASM_PACK_VERSION=0.15.1

source edge-validator/build-tools.sh

# Debian tools the tests run: gdnsd and dig (geo-DNS failover drill), psql (PostgreSQL
# tests create their databases with it), python3 and curl.
missing=()
command -v gdnsd >/dev/null || missing+=(gdnsd)
command -v dig >/dev/null || missing+=(bind9-dnsutils)
command -v psql >/dev/null || missing+=(postgresql-client)
# python3 (3.11 or newer, for tomllib): deploy/check, docs/render, the Python origin test;
# curl: the issuer's CLI tests and deploy/local/up.
command -v python3 >/dev/null || missing+=(python3)
command -v curl >/dev/null || missing+=(curl)
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


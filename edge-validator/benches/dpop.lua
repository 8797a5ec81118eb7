-- wrk script for benches/run's edge-fresh-dpop row: every request carries the same
-- DPoP-bound token ($BENCH_DPOP_TOKEN, cached by the edge after its first use) and a proof
-- no one has seen, from $BENCH_PROOFS (one per line, `bench_tokens proofs N URL TOKEN`);
-- each wrk thread walks its own slice of the file.
local threads = 0
function setup(thread)
  thread:set("slice", threads)
  threads = threads + 1
end

function init(args)
  proofs = {}
  for line in io.lines(os.getenv("BENCH_PROOFS")) do
    proofs[#proofs + 1] = line
  end
  authorization = "DPoP " .. os.getenv("BENCH_DPOP_TOKEN")
  position = math.floor(#proofs * slice / 2)
end

function request()
  position = position + 1
  if position > #proofs then
    position = 1
  end
  return wrk.format("GET", nil, { ["Authorization"] = authorization, ["DPoP"] = proofs[position] })
end

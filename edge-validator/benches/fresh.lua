-- wrk script for benches/run: every request carries a token no cache has seen. Tokens come
-- from $BENCH_TOKENS (one per line, written by `bench_tokens tokens N`); each wrk thread
-- walks its own slice of the file.
local threads = 0
function setup(thread)
  thread:set("slice", threads)
  threads = threads + 1
end

function init(args)
  tokens = {}
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    tokens[#tokens + 1] = line
  end
  position = math.floor(#tokens * slice / 2)
end

function request()
  position = position + 1
  if position > #tokens then
    position = 1
  end
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. tokens[position] })
end

// Asks the edge's rate-limit Durable Object (RATE_LIMITER) the way an edge of either release
// does: `GET /fetch?object=NAME&query=URL` calls `stub.fetch(URL)`, as every edge so far asks,
// and `GET /rpc?...` calls the RPC method `stub.ask(URL)`, as a later edge may. Answers with
// the object's answer and status; a rejected RPC is 502 with its message.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const namespace = env.RATE_LIMITER;
    const stub = namespace.get(namespace.idFromName(url.searchParams.get("object")));
    const query = url.searchParams.get("query");
    try {
      if (url.pathname === "/rpc") return new Response(await stub.ask(query));
      const answer = await stub.fetch(query);
      return new Response(await answer.text(), { status: answer.status });
    } catch (error) {
      return new Response(String(error), { status: 502 });
    }
  },
};

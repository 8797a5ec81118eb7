// Asks the edge's rate-limit Durable Object (RATE_LIMITER) the way an edge of either release
// does: `GET /fetch?object=NAME&query=URL` calls `stub.fetch(URL)`, as every edge so far asks,
// and `GET /rpc?...` calls the RPC method `stub.ask(URL)`, as a later edge may. Answers with
// the object's answer, status and content type; an RPC answer of `undefined` (a query the
// object does not know) is 404, a rejected RPC 502 with its message.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const namespace = env.RATE_LIMITER;
    const stub = namespace.get(namespace.idFromName(url.searchParams.get("object")));
    const query = url.searchParams.get("query");
    try {
      if (url.pathname === "/rpc") {
        const answer = await stub.ask(query);
        return answer === undefined ? new Response("no answer", { status: 404 }) : new Response(answer);
      }
      const answer = await stub.fetch(query);
      const type = answer.headers.get("content-type");
      return new Response(await answer.text(), { status: answer.status, headers: type ? { "content-type": type } : {} });
    } catch (error) {
      return new Response(String(error), { status: 502 });
    }
  },
};

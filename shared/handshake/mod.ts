/**
 * The HopGate hello exchange on the control stream (the first stream the client
 * opens once DTLS is up):
 *
 *   client: Hello { proto, client, domain, target }  ---->
 *                                                    <----  Welcome { session, server }
 *                                                       or  Reject { code, message }
 *
 * The control stream stays open for the session's life.
 */
import type { MuxSession, MuxStream } from "../mux/mod.ts";
import {
  encodeHead,
  type Hello,
  PROTOCOL_VERSION,
  readHead,
  type Reject,
  type RejectCode,
  type Welcome,
} from "../protocol/mod.ts";

export class HelloRejectedError extends Error {
  override name = "HelloRejectedError";
  constructor(readonly code: RejectCode | "protocol_error", message: string) {
    super(message);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new HelloRejectedError("protocol_error", `${what} timed out after ${ms} ms`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

async function writeHead(stream: MuxStream, head: Parameters<typeof encodeHead>[0]): Promise<void> {
  const w = stream.writable.getWriter();
  try {
    await w.write(encodeHead(head));
  } finally {
    w.releaseLock();
  }
}

/** Client side: opens the control stream, says hello, returns the welcome (or throws). */
export async function sayHello(
  session: MuxSession,
  hello: Omit<Hello, "t" | "proto">,
  timeoutMs = 10_000,
): Promise<{ welcome: Welcome; control: MuxStream }> {
  const control = session.openStream();
  await writeHead(control, { t: "hello", proto: PROTOCOL_VERSION, ...hello });
  const { head } = await withTimeout(
    readHead(control.readable),
    timeoutMs,
    "Waiting for the server's welcome",
  );
  if (head.t === "welcome") return { welcome: head, control };
  if (head.t === "reject") throw new HelloRejectedError(head.code, head.message);
  throw new HelloRejectedError("protocol_error", `Expected welcome, got "${head.t}"`);
}

/**
 * Server side: waits for the control stream and its hello, asks `decide` for a
 * welcome or a reject, sends it, and returns the hello (or throws after a reject).
 */
export async function awaitHello(
  session: MuxSession,
  decide: (hello: Hello) => Welcome | Reject,
  timeoutMs = 10_000,
): Promise<{ hello: Hello; welcome: Welcome; control: MuxStream }> {
  const control = await withTimeout(
    session.acceptStream(),
    timeoutMs,
    "Waiting for the client's control stream",
  );
  if (!control) throw new HelloRejectedError("protocol_error", "Session closed before the hello");
  let hello: Hello;
  try {
    const { head } = await withTimeout(
      readHead(control.readable),
      timeoutMs,
      "Waiting for the client's hello",
    );
    if (head.t !== "hello") {
      throw new HelloRejectedError("bad_hello", `Expected hello, got "${head.t}"`);
    }
    hello = head;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    await writeHead(control, { t: "reject", code: "bad_hello", message }).catch(() => {});
    throw e instanceof HelloRejectedError ? e : new HelloRejectedError("bad_hello", message);
  }
  const answer = decide(hello);
  await writeHead(control, answer);
  if (answer.t === "reject") throw new HelloRejectedError(answer.code, answer.message);
  return { hello, welcome: answer, control };
}

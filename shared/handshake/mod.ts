/**
 * The HopGate hello exchange on the control stream (the first stream the client
 * opens once DTLS is up):
 *
 *   client: Hello { proto, client, domain, target }  ---->
 *                                                    <----  Welcome { session, server }
 *                                                       or  Reject { code, message }
 *
 * The control stream stays open for the session's life.
 *
 * The exchange needs only a stream's Web Streams and a way to open or accept one, so it
 * takes those as interfaces (a `MuxSession` and its `MuxStream`s fit) and hands back the
 * caller's own stream type.
 */
import { type Clock, realClock } from "../clock.ts";
import {
  encodeHead,
  type Hello,
  PROTOCOL_VERSION,
  readHead,
  type Reject,
  type RejectCode,
  type Welcome,
} from "../protocol/mod.ts";

export type { Clock } from "../clock.ts";

/** What the hello exchange needs of a stream (a `MuxStream` fits). */
export interface ControlStream {
  /** Bytes from the peer. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer. */
  readonly writable: WritableStream<Uint8Array>;
}

/** The client's side of a session: it opens the control stream (a `MuxSession` fits). */
export interface ControlStreamOpener<S extends ControlStream> {
  /** Opens a new stream. */
  openStream(): S;
}

/** The server's side of a session: it accepts the control stream (a `MuxSession` fits). */
export interface ControlStreamAcceptor<S extends ControlStream> {
  /** The next stream the peer opened, or null once the session is closed. */
  acceptStream(): Promise<S | null>;
}

/** The hello exchange failed: the server's reject code, or `protocol_error`. */
export class HelloRejectedError extends Error {
  /** The error's name, for logs. */
  override name = "HelloRejectedError";
  /** An error with the reject `code` and the server's (or our) message. */
  constructor(readonly code: RejectCode | "protocol_error", message: string) {
    super(message);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string, clock: Clock): Promise<T> {
  let timer: unknown;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = clock.setTimer(
        () => reject(new HelloRejectedError("protocol_error", `${what} timed out after ${ms} ms`)),
        ms,
      );
    }),
  ]).finally(() => clock.clearTimer(timer));
}

async function writeHead(
  stream: ControlStream,
  head: Parameters<typeof encodeHead>[0],
): Promise<void> {
  const w = stream.writable.getWriter();
  try {
    await w.write(encodeHead(head));
  } finally {
    w.releaseLock();
  }
}

/** Client side: opens the control stream, says hello, returns the welcome (or throws). */
export async function sayHello<S extends ControlStream>(
  session: ControlStreamOpener<S>,
  hello: Omit<Hello, "t" | "proto">,
  timeoutMs = 10_000,
  clock: Clock = realClock,
): Promise<{ welcome: Welcome; control: S }> {
  const control = session.openStream();
  await writeHead(control, { t: "hello", proto: PROTOCOL_VERSION, ...hello });
  const { head } = await withTimeout(
    readHead(control.readable),
    timeoutMs,
    "Waiting for the server's welcome",
    clock,
  );
  if (head.t === "welcome") return { welcome: head, control };
  if (head.t === "reject") throw new HelloRejectedError(head.code, head.message);
  throw new HelloRejectedError("protocol_error", `Expected welcome, got "${head.t}"`);
}

/**
 * Server side: waits for the control stream and its hello, asks `decide` for a
 * welcome or a reject, sends it, and returns the hello (or throws after a reject).
 */
export async function awaitHello<S extends ControlStream>(
  session: ControlStreamAcceptor<S>,
  decide: (hello: Hello) => Welcome | Reject,
  timeoutMs = 10_000,
  clock: Clock = realClock,
): Promise<{ hello: Hello; welcome: Welcome; control: S; after: ReadableStream<Uint8Array> }> {
  const control = await withTimeout(
    session.acceptStream(),
    timeoutMs,
    "Waiting for the client's control stream",
    clock,
  );
  if (!control) throw new HelloRejectedError("protocol_error", "Session closed before the hello");
  let hello: Hello;
  let after: ReadableStream<Uint8Array>;
  try {
    const { head, body } = await withTimeout(
      readHead(control.readable),
      timeoutMs,
      "Waiting for the client's hello",
      clock,
    );
    if (head.t !== "hello") {
      throw new HelloRejectedError("bad_hello", `Expected hello, got "${head.t}"`);
    }
    hello = head;
    after = body;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    await writeHead(control, { t: "reject", code: "bad_hello", message }).catch(() => {});
    throw e instanceof HelloRejectedError ? e : new HelloRejectedError("bad_hello", message);
  }
  const answer = decide(hello);
  await writeHead(control, answer);
  if (answer.t === "reject") throw new HelloRejectedError(answer.code, answer.message);
  return { hello, welcome: answer, control, after };
}

/**
 * Server side, after the welcome: reads the heads the client sends on the control
 * stream (`after`, from `awaitHello`) and calls `onDrain` at the first `Drain`.
 * Resolves when the stream ends or holds something else (nothing else is defined).
 */
export async function watchControl(
  after: ReadableStream<Uint8Array>,
  onDrain: () => void,
): Promise<void> {
  let rest = after;
  for (;;) {
    let head;
    try {
      ({ head, body: rest } = await readHead(rest));
    } catch {
      return; // ended (the session closed), or not a head
    }
    if (head.t !== "drain") return;
    onDrain();
  }
}

/** Client side: asks the server to drain this session (it has FEATURE_DRAIN). */
export function sendDrain(control: ControlStream): Promise<void> {
  return writeHead(control, { t: "drain" });
}

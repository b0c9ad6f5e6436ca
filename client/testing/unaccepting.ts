/**
 * Test fixture: a TCP address whose connects hang. A python3 listener with a backlog
 * of 0 that never accepts (Deno has no backlog option), its accept queue filled by
 * one connection: Linux queues backlog + 1 connections, then drops further SYNs.
 */
export interface Unaccepting {
  port: number;
  close(): Promise<void>;
}

export async function unacceptingListener(): Promise<Unaccepting> {
  const py = new Deno.Command("python3", {
    args: [
      "-c",
      [
        "import socket,time",
        "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(0)",
        "print(s.getsockname()[1], flush=True)",
        "time.sleep(60)",
      ].join("\n"),
    ],
    stdout: "piped",
  }).spawn();
  const reader = py.stdout.getReader();
  const stop = async () => {
    try {
      py.kill();
    } catch { /* already gone */ }
    await reader.cancel().catch(() => {});
    await py.status;
  };
  try {
    const line = await reader.read();
    const port = Number(new TextDecoder().decode(line.value).trim());
    const filler = await Deno.connect({ hostname: "127.0.0.1", port });
    return {
      port,
      async close() {
        filler.close();
        await stop();
      },
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

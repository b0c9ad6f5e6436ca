/** The in-memory link profiles the conformance suite runs over (memory_test.ts, bbr_test.ts). */
import type { LinkOptions } from "./lossy_link.ts";

export const memoryProfiles: [string, Omit<LinkOptions, "clock">][] = [
  ["memory 0% loss", { delayMs: 5 }],
  ["memory 1% loss", { delayMs: 5, loss: 0.01, seed: 2 }],
  ["memory 5% loss", { delayMs: 5, loss: 0.05, seed: 3 }],
  ["memory 20% loss", { delayMs: 5, loss: 0.2, seed: 4 }],
  ["memory burst loss+reorder+dup+jitter, MTU 576", {
    delayMs: 10,
    jitterMs: 4,
    loss: 0.01,
    burst: { enter: 0.005, exit: 0.3 },
    reorder: 0.05,
    reorderDelayMs: 8,
    duplicate: 0.02,
    mtu: 576,
    seed: 5,
  }],
  ["memory 1% loss, path MTU 4000 under a 16 KiB ceiling (PMTU discovery)", {
    delayMs: 5,
    loss: 0.01,
    mtu: 16384,
    pathMtu: 4000,
    seed: 7,
  }],
  ["memory 2 MB/s bottleneck, 32 KiB queue", {
    delayMs: 20,
    rateBytesPerMs: 2000,
    queueBytes: 32 * 1024,
    seed: 6,
  }],
];

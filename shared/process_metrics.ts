/**
 * Prometheus pieces both programs (server and client) export the same way.
 * prom-client's default process metrics read 0 without `-A`, so memory comes from
 * `Deno.memoryUsage()` at scrape time.
 */
import { Gauge, type Registry } from "prom-client";

/** Buckets for request durations, in seconds: 5 ms to a minute. */
export const REQUEST_DURATION_BUCKETS_SECONDS = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
];

/** A gauge `name{kind="rss"|"heap_total"|"heap_used"|"external"}` read at each scrape. */
export function processMemoryGauge(name: string, registers: Registry[]): Gauge<string> {
  return new Gauge({
    name,
    help: "Process memory from Deno.memoryUsage(), by kind.",
    labelNames: ["kind"],
    registers,
    collect() {
      const m = Deno.memoryUsage();
      this.labels("rss").set(m.rss);
      this.labels("heap_total").set(m.heapTotal);
      this.labels("heap_used").set(m.heapUsed);
      this.labels("external").set(m.external);
    },
  });
}

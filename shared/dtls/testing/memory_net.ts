/**
 * The DTLS tests' in-memory network: the shared simulated network
 * (shared/testing/sim_net.ts) under the name these tests use.
 */
export {
  prng,
  SimNet as MemoryNet,
  type SimNetOptions as MemoryNetOptions,
} from "../../testing/sim_net.ts";

/**
 * The send side of a session: packs frames into packets and sends them, as far as the
 * congestion window and the pacer allow.
 *
 * Send order inside each packet: ACK, then control frames (they jump the queue), then
 * stream data — retransmissions before new data — round-robin across streams so no
 * stream starves and none blocks another. A PMTU probe goes in a packet of its own; a
 * warm-up (warm_up.ts) fills what the window leaves when there is nothing else to send.
 * What each packet carried is handed to recovery.ts, and comes back here when it is
 * acknowledged or lost.
 */
import type { DatagramConn } from "../datagram.ts";
import type { AckTracker } from "./ack_tracker.ts";
import type { Clock } from "./clock.ts";
import type { ConnFlow } from "./conn_flow.ts";
import type { AckFrequency, ControlFrames } from "./control_frames.ts";
import { SessionErrorCode } from "./errors.ts";
import {
  ackFrameLength,
  encodeAck,
  encodeClose,
  encodePacketHeader,
  encodeTimestamp,
  FrameType,
  packetHeaderLength,
  timestampFrameLength,
} from "./frames.ts";
import type { PathMtu } from "./pmtud.ts";
import type { Recovery } from "./recovery.ts";
import { FrameKind, type SentFrame, SentMtuProbe } from "./sent_frame.ts";
import type { Stream } from "./stream.ts";
import type { StreamsMap } from "./streams_map.ts";
import type { WarmUp } from "./warm_up.ts";
import { Writer } from "./wire.ts";
import { setImmediate } from "node:timers";

/** The session's counters the send side keeps (MuxStats). */
export interface SendCounters {
  packetsSent: number;
  bytesSent: number;
  bytesRetransmitted: number;
  framesRetransmitted: number;
  tailCopyBytes: number;
  streamBytesSent: number;
  warmUpPacketsSent: number;
  warmUpBytesSent: number;
}

export interface PackerParts {
  conn: DatagramConn;
  clock: Clock;
  recovery: Recovery<SentFrame>;
  ack: AckTracker;
  pmtu: PathMtu;
  control: ControlFrames;
  ackFrequency: AckFrequency;
  streams: StreamsMap;
  flow: ConnFlow;
  stats: SendCounters;
  /** PTOs in a row, sending packets above the base size, that mean a PMTU black hole. */
  blackHolePtos: number;
  /** Tail copies go out at this recent loss rate or more (params.tailCopyLossRatio). */
  tailCopyLossRatio: number;
  /** ACK deadlines this close are met at once (params.timerGranularityMs). */
  timerGranularityMs: number;
  /** After each flush: the session re-arms its timer (pacing, ACK delay, PTO). */
  onFlushed(): void;
}

/** Streams remembered for tail copies until the send queue runs empty. */
const MAX_FINISHED = 64;
/**
 * Timed ACKs: an ACK for this many new packets or more read in one go (a run the event
 * loop read before its ACK could go) also says, in up to TIMED_ACK_FRAMES extra ACK frames
 * ahead of it, when some of them arrived: each acknowledges up to one of them with its own
 * ACK delay. The peer learns the run's arrival spacing (first_flight.ts times a session's
 * first flight by it); a peer that knows nothing of this just processes more ACK frames.
 * Only the first TIMED_ACK_RUNS such ACKs of a session carry them.
 */
const TIMED_ACK_MIN_PACKETS = 8;
const TIMED_ACK_FRAMES = 8;
const TIMED_ACK_RUNS = 8;
/** Room below which no stream frame is started in a packet (it is full). */
const STREAM_FRAME_MIN_ROOM = 12;

export class Packer {
  /** When the pacer lets the next packet go, if it held one back (else Infinity). */
  pacingAt = Infinity;
  /** When the last packet went out (the keepalive counts from it). */
  lastSendTime: number;
  /**
   * When the first packet asking for an ACK went out since the peer was last heard
   * (Infinity: none); the session resets it on each packet received (unansweredTimeoutMs).
   */
  unansweredSince = Infinity;
  /**
   * The peer reads TIMESTAMP frames (it said so in its hello or welcome): each packet with
   * ACKs dates them on our clock, so the peer can time its deliveries by when they arrived
   * here rather than by when the ACKs reached it (delivery_rate.ts).
   */
  timestamps = false;
  /** Our clock's origin for TIMESTAMP frames (µs since then). */
  readonly #epoch: number;
  #nextPn = 0;
  readonly #p: PackerParts;
  readonly #scratch: Uint8Array;
  /** The transport is done with a sent buffer when `send` returns (`DatagramConn.sendCopies`). */
  readonly #sendCopies: boolean;
  readonly #writer: Writer;
  /** Streams with something to send, round-robin. */
  #queue: Stream[] = [];
  /** Streams wait in the send queue. */
  get hasQueuedStreams(): boolean {
    return this.#queue.length > 0;
  }
  #scheduled = false;
  readonly #flushBound = () => this.flush();
  /** The session closed: nothing more is sent. */
  #closed = false;
  /**
   * A packet of stream data went out full with more waiting behind it: bigger packets
   * would help, so path MTU probes may start. A session that only ever sends small
   * messages (an idle tunnel's hello and keepalives, small requests) never probes:
   * each probe is a padded datagram to encrypt, send and acknowledge on both ends,
   * ~5 % of what opening a tunnel cost each end.
   */
  #sizeLimited = false;
  /**
   * A stream's window update (MAX_STREAM_DATA) went out among ACKs since the last
   * ack-eliciting packet that followed one: the next ACK-only packet carries a PING.
   */
  #pingAfterUpdate = false;
  /** The warm-up running, if any (warm_up.ts). */
  #warmUp: WarmUp | null = null;
  /** Streams whose FIN went out since the send queue last ran empty (tail copies). */
  #finished = new Set<Stream>();
  /** ACKs that may still carry arrival times (TIMED_ACK_RUNS). */
  #timedAckRuns = TIMED_ACK_RUNS;
  /** The timed ACK frames (pn, arrival, their ranges) of the packet being built. */
  #timed: { pn: number; at: number; ranges: number[] }[] = [];
  /**
   * The tail being copied: the streams that had just finished when the queue ran empty, the
   * span of their packets worth a copy (sent in the half round trip before `until`), and
   * the packet to go on from (each is offered once, newest first).
   */
  #tail: { streams: Set<Stream>; since: number; until: number; nextPn: number } | null = null;

  constructor(parts: PackerParts, now: number) {
    this.#p = parts;
    this.#scratch = new Uint8Array(parts.conn.maxDatagramSize);
    this.#sendCopies = parts.conn.sendCopies === true;
    this.#writer = new Writer(this.#scratch);
    this.lastSendTime = now;
    this.#epoch = now;
  }

  /**
   * The send loop runs on setImmediate, not a microtask: a request's head, body and
   * FIN (and the ACKs for a batch of received datagrams) are written over several
   * promise hops, and a microtask flush sent each as its own packet (9 datagrams each
   * way per tiny HTTP exchange, each costing a DTLS record, a syscall and a wakeup
   * on the peer). setImmediate runs once the current turn's promise chains settled.
   */
  schedule(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    setImmediate(this.#flushBound);
  }

  /** Sends what may go now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#closed) return;
    this.#pack(this.#p.clock.now());
    this.#p.onFlushed();
  }

  /** s has data, FIN or a retransmission to send: into the round-robin (once), and flush. */
  queue(s: Stream): void {
    if (this.#closed) return;
    if (!s.inSendQueue) {
      s.inSendQueue = true;
      this.#queue.push(s);
    }
    this.schedule();
  }

  /** The peer's MAX_DATA or MAX_STREAMS let more through: queue every stream that may send. */
  requeueAll(): void {
    for (const s of this.#p.streams.values()) {
      if (this.hasSendWork(s)) this.queue(s);
    }
  }

  /** s has data, FIN or a retransmission that flow control and MAX_STREAMS let go now. */
  hasSendWork(s: Stream): boolean {
    return !this.#p.streams.beyondPeerLimit(s) && s.hasSendWork(this.#p.flow.sendCredit);
  }

  /** The warm-up running, if any. */
  get warmUp(): WarmUp | null {
    return this.#warmUp;
  }

  /** Starts `w` (replacing none: the session runs one at a time). */
  startWarmUp(w: WarmUp): void {
    this.#warmUp = w;
    // Full-size packets: path MTU discovery may start at once.
    this.#sizeLimited = true;
    this.schedule();
  }

  /** A warm-up runs and should send now; ends it when it should stop. */
  #warming(now: number): boolean {
    const w = this.#warmUp;
    if (w === null) return false;
    const end = w.endReason(now, this.#p.recovery.cc.bandwidthKnown);
    if (end === null) return true;
    this.#warmUp = null;
    w.finish(now, end);
    return false;
  }

  /** Sends packets while there is something to send and the window and the pacer allow. */
  #pack(now: number): void {
    const { recovery: rec, ack, control, pmtu, stats } = this.#p;
    const mds = pmtu.size;
    this.pacingAt = Infinity;
    this.#maybeProbeMtu(now);
    // A bulk sender (stream data, or a warm-up) asks for fewer ACKs.
    if (
      (this.#queue.length > 0 || this.#warmUp !== null) &&
      this.#p.ackFrequency.update(now, rec.cwnd, mds, rec.smoothedRtt)
    ) {
      control.queue(FrameKind.ACK_FREQUENCY);
    }
    for (let guard = 0; guard < 10_000; guard++) {
      const ackDue = ack.due(now, this.#p.timerGranularityMs);
      const hasControl = control.pending;
      const probe = rec.probesPending > 0;
      const warm = this.#queue.length === 0 && !probe && this.#warming(now);
      let dataOk = false;
      if (this.#queue.length > 0 || probe || warm) {
        if (!rec.canSend(mds)) {
          rec.cwndLimited = true;
        } else {
          const t = rec.pacingTime(mds, now);
          if (t <= now) dataOk = true;
          else this.pacingAt = t;
        }
      }
      if (!ackDue && !hasControl && !dataOk) break;

      const w = this.#writer;
      w.pos = 0;
      const pn = this.#nextPn;
      encodePacketHeader(w, pn);
      // Reserve room for an ACK (written last; frame order does not matter).
      const ackLen = ack.pending || ackDue ? this.#ackLength(now, mds) : 0;
      w.end = mds - ackLen;
      const frames: SentFrame[] = [];
      let update = false;
      let warmBytes = false;
      if (hasControl) {
        control.write(w, frames);
        for (const f of frames) {
          if (f.kind === FrameKind.MAX_STREAM_DATA && (f.stream as Stream).recvOpen) update = true;
        }
      }
      let eliciting = frames.length > 0 || w.pos > packetHeaderLength(pn);
      if (dataOk) {
        if (this.#queue.length > 0 && this.#writeStreams(w, frames)) {
          eliciting = true;
          if (this.#queue.length > 0 && w.remaining <= STREAM_FRAME_MIN_ROOM) {
            this.#sizeLimited = true;
          }
        }
        if (probe && !eliciting && w.remaining > 0) {
          // PTO with nothing to resend: a PING is enough to elicit an ACK.
          w.u8(FrameType.PING);
          eliciting = true;
        }
        if (warm && !eliciting && w.remaining > 0) {
          // A warm-up packet: WARM_UP, then PADDING up to the ACK's room.
          w.u8(FrameType.WARM_UP);
          this.#scratch.fill(0, w.pos, w.end);
          w.pos = w.end;
          eliciting = true;
          warmBytes = true;
        }
      }
      // Only an update that may hold a sender back: of a stream still receiving, among
      // ACKs. One beside our own stream data (a request announcing its stream's window) is
      // followed by more of our packets anyway, and a session's MAX_DATA rarely holds one
      // back (its cap is 32 MiB past what was read); a PING after those would leave
      // ack-eliciting packets outstanding after the last answer of a burst, and a peer that
      // vanished then would be given up after 20 s unanswered instead of 30 s of silence.
      if (update && !frames.some((f) => f.kind === FrameKind.STREAM)) this.#pingAfterUpdate = true;
      if (!eliciting && ackLen > 0 && this.#pingAfterUpdate && frames.length === 0) {
        // A receiver sends only ACKs, so a lost window update had only the probe timeout
        // to find it (three round trips and more) while its sender sat blocked. A later
        // packet the peer acknowledges lets loss detection find it within ~9/8 of one.
        w.u8(FrameType.PING);
        eliciting = true;
        this.#pingAfterUpdate = false;
      }
      w.end = mds;
      if (!eliciting && !ackDue) break;
      if (ackLen > 0) this.#writeAck(w, now);
      this.#nextPn++;
      // A transport that copies on send (DTLS) gets the scratch itself: at 16 KiB the
      // per-packet copy was a third of the bytes the process allocated.
      const pkt = this.#sendCopies
        ? this.#scratch.subarray(0, w.pos)
        : this.#scratch.slice(0, w.pos);
      if (eliciting) {
        rec.onPacketSent(pn, now, pkt.length, true, frames);
        if (this.unansweredSince === Infinity) this.unansweredSince = now;
      }
      stats.packetsSent++;
      stats.bytesSent += pkt.length;
      if (warmBytes) {
        this.#warmUp!.packets++;
        this.#warmUp!.bytes += pkt.length;
        stats.warmUpPacketsSent++;
        stats.warmUpBytesSent += pkt.length;
      }
      this.lastSendTime = now;
      this.#p.conn.send(pkt);
    }
    if (this.#queue.length === 0) {
      if (this.#warmUp === null) {
        // Nothing left to send (or flow control holds it): the application limits us.
        rec.cwndLimited = false;
        rec.onAppLimited();
      }
      if (this.#finished.size > 0) {
        this.#tail = {
          streams: this.#finished,
          since: now - rec.smoothedRtt / 2,
          until: now,
          nextPn: rec.lastSentPn,
        };
        this.#finished = new Set();
      }
      if (this.#tail !== null) this.#copyTail(now);
    }
  }

  /**
   * Sends a PMTU probe (PING + PADDING of the probe size) if one is due and may go now,
   * and the session has had more stream data than fits a packet (#sizeLimited).
   */
  #maybeProbeMtu(now: number): void {
    if (!this.#sizeLimited) return;
    const { pmtu: pm, recovery: rec, stats } = this.#p;
    const size = pm.probeSize(now);
    if (size === 0) return;
    // One probe at a time may overshoot the window: it stands in for a base-size packet
    // (a 16 KiB probe would never fit an initial window of 10 x 1200 bytes).
    if (!rec.canSend(pm.base) || rec.pacingTime(pm.base, now) > now) return;
    const w = this.#writer;
    w.pos = 0;
    const pn = this.#nextPn++;
    encodePacketHeader(w, pn);
    w.u8(FrameType.PING);
    const pkt = new Uint8Array(size); // zero-filled: the rest is PADDING
    pkt.set(this.#scratch.subarray(0, w.pos));
    pm.onProbeSent(size);
    rec.onPacketSent(pn, now, size, true, [new SentMtuProbe(size)], true);
    if (this.unansweredSince === Infinity) this.unansweredSince = now;
    stats.packetsSent++;
    stats.bytesSent += size;
    this.lastSendTime = now;
    this.#p.conn.send(pkt);
  }

  #ackLength(now: number, mds: number): number {
    const ack = this.#p.ack;
    const delayUs = Math.max(0, Math.round((now - ack.largestReceivedTime) * 1000));
    const len = Math.min(ackFrameLength(ack.ranges, delayUs), Math.floor(mds / 2)) +
      (this.timestamps ? timestampFrameLength(this.#timestampUs(now)) : 0);
    this.#timed = [];
    if (this.#timedAckRuns === 0) return len;
    let timedLen = 0;
    for (const [pn, at] of ack.timedPoints(TIMED_ACK_MIN_PACKETS, TIMED_ACK_FRAMES)) {
      const ranges = ack.rangesUpTo(pn);
      if (ranges.length === 0 || ranges.length > 8) continue;
      timedLen += ackFrameLength(ranges, Math.round((now - at) * 1000));
      this.#timed.push({ pn, at, ranges });
    }
    // Never more than a quarter of the packet.
    if (timedLen > mds / 4) {
      this.#timed = [];
      return len;
    }
    return len + timedLen;
  }

  #timestampUs(now: number): number {
    return Math.max(0, Math.round((now - this.#epoch) * 1000));
  }

  #writeAck(w: Writer, now: number): void {
    const ack = this.#p.ack;
    // Ahead of the ACKs it dates (the peer reads frames in order).
    if (this.timestamps) encodeTimestamp(w, this.#timestampUs(now));
    if (this.#timed.length > 0) {
      // Oldest first: each acknowledges what the one before did and more.
      for (const t of this.#timed) {
        const us = Math.max(0, Math.round((now - t.at) * 1000));
        if (ackFrameLength(t.ranges, us) > w.remaining) break;
        encodeAck(w, t.ranges, us);
      }
      this.#timed = [];
      // The last timed ACK: the tracker need not keep arrival times any more.
      if (--this.#timedAckRuns === 0) ack.timeArrivals = false;
    }
    const delayUs = Math.max(0, Math.round((now - ack.largestReceivedTime) * 1000));
    let ranges: number[] = ack.ranges;
    const room = Math.min(w.remaining, Math.floor(this.#p.pmtu.size / 2));
    if (ackFrameLength(ranges, delayUs) > room) {
      ranges = ranges.slice(0, 2);
      for (let n = 4; n <= ack.ranges.length; n += 2) {
        const more = ack.ranges.slice(0, n);
        if (ackFrameLength(more, delayUs) > room) break;
        ranges = more;
      }
    }
    encodeAck(w, ranges, delayUs);
    ack.onAckSent();
  }

  /** Writes stream frames round-robin; returns true if any were written. */
  #writeStreams(w: Writer, frames: SentFrame[]): boolean {
    const q = this.#queue;
    let wrote = false;
    let visits = q.length;
    while (visits-- > 0 && q.length > 0 && w.remaining > STREAM_FRAME_MIN_ROOM) {
      const s = q.shift()!;
      s.inSendQueue = false;
      if (!this.hasSendWork(s)) continue;
      if (this.#writeStreamFrame(s, w, frames)) wrote = true;
      // A write that moved in as the frame went out may have queued s already.
      if (!s.inSendQueue && this.hasSendWork(s)) {
        s.inSendQueue = true;
        q.push(s);
      }
    }
    return wrote;
  }

  #writeStreamFrame(s: Stream, w: Writer, frames: SentFrame[]): boolean {
    const { flow, stats } = this.#p;
    const again = s.retransmitting;
    const f = s.writeFrame(w, flow.sendCredit);
    if (f === null) return false;
    frames.push(f);
    if (again) {
      stats.bytesRetransmitted += f.length;
      stats.framesRetransmitted++;
    } else {
      flow.onNewDataSent(f.length);
      stats.streamBytesSent += f.length;
      if (f.fin) {
        // Bounded: a send queue that never runs empty never copies, and keeps no old streams.
        const finished = this.#finished;
        if (finished.size >= MAX_FINISHED) finished.delete(finished.values().next().value!);
        finished.add(s);
      }
    }
    return true;
  }

  /**
   * The send queue ran empty after streams sent their last bytes: on a path losing packets
   * at random (params.tailCopyLossRatio), what those streams sent in the last half round
   * trip goes out once more, newest first, as far as the path's BDP (max_bw x min_rtt)
   * exceeds what is in flight, so a loss there is made good without waiting a round trip to
   * detect it. Earlier losses are detected while the tail is still on its way. A bulk
   * answer's tail fills the BDP when it ends: its copies go out as ACKs make room, for as
   * long as a copy arrives before the resend a loss would get (half a round trip more).
   */
  #copyTail(now: number): void {
    const tail = this.#tail!;
    const rec = this.#p.recovery;
    if (now > tail.until + rec.smoothedRtt / 2) {
      this.#tail = null;
      return;
    }
    if (!rec.cc.lossIsRandom || rec.recentLossRatio < this.#p.tailCopyLossRatio) return;
    // Copies fill what the path holds beyond what is in flight; they never queue at it.
    const cc = rec.cc.stats();
    let room = cc.maxBwBytesPerMs * cc.modelMinRttMs - rec.bytesInFlight;
    if (room <= 0) return;
    const stats = this.#p.stats;
    tail.nextPn = rec.forEachTail(tail.nextPn, tail.since, (frames) => {
      if (room <= 0) return false;
      for (const f of frames) {
        if (room <= 0) break;
        if (f.kind === FrameKind.STREAM && tail.streams.has(f.stream as Stream)) {
          stats.tailCopyBytes += f.length;
          room -= f.length;
          f.stream.onDataLost(f.offset, f.length, f.fin);
        }
      }
      return true;
    });
    if (tail.nextPn < 0) this.#tail = null;
  }

  /**
   * The loss-detection timer fired (recovery.ts): time-threshold losses, or a PTO, whose
   * probes carry the oldest packets' frames again (or a PING if there is nothing else).
   */
  onLossDetectionTimeout(now: number): void {
    const { recovery: rec, pmtu: pm, control } = this.#p;
    const probe = rec.onTimeout(now);
    if (probe === null) return;
    if (rec.ptoCount >= this.#p.blackHolePtos && pm.size > pm.base) {
      // Nothing acked for several PTOs while sending large packets: maybe they vanish.
      pm.onBlackHole(now);
      rec.setMaxDatagramSize(pm.size);
    }
    for (const f of probe) this.onFrameLost(f);
    if (this.#queue.length === 0 && !control.pending) control.queue(FrameKind.PING);
  }

  /**
   * The peer is reached at a new address: probe what is in flight now, as a PTO would,
   * with the PTO backoff started again (it measured the old address).
   */
  probeOnNewPath(now: number): void {
    const rec = this.#p.recovery;
    rec.ptoCount = 0;
    if (rec.bytesInFlight > 0) this.onLossDetectionTimeout(now);
    rec.ptoCount = 0;
  }

  /** A packet with only an ACK (the reply to the peer's CLOSE). */
  sendAckOnly(now: number): void {
    this.#timed = [];
    const w = this.#writer;
    w.pos = 0;
    encodePacketHeader(w, this.#nextPn++);
    this.#writeAck(w, now);
    this.#p.conn.send(this.#scratch.slice(0, w.pos));
  }

  /** The immediate close's CLOSE (with an ACK if anything was received), sent twice. */
  sendClose(code: number, reason: string, now: number): void {
    this.#timed = [];
    const w = this.#writer;
    w.pos = 0;
    encodePacketHeader(w, this.#nextPn++);
    if (this.#p.ack.ranges.length > 0) this.#writeAck(w, now);
    encodeClose(w, code >= 0x100 ? SessionErrorCode.NO_ERROR : code, reason);
    const pkt = this.#scratch.slice(0, w.pos);
    // Twice: CLOSE is not retransmitted, and a lost one costs the peer an idle timeout.
    this.#p.conn.send(pkt);
    this.#p.conn.send(pkt.slice());
  }

  /** A packet carrying f was acknowledged (recovery.ts). */
  onFrameAcked(f: SentFrame): void {
    switch (f.kind) {
      case FrameKind.STREAM:
        f.stream.onDataAcked(f.offset, f.length, f.fin);
        return;
      case FrameKind.MTU_PROBE: {
        const pm = this.#p.pmtu;
        const before = pm.size;
        pm.onProbeAcked(f.size, this.#p.clock.now());
        if (pm.size !== before) this.#p.recovery.setMaxDatagramSize(pm.size);
        return;
      }
      default:
        this.#p.control.onAcked(f);
    }
  }

  /** A packet carrying f was declared lost, or f goes out again as a PTO probe. */
  onFrameLost(f: SentFrame): void {
    switch (f.kind) {
      case FrameKind.STREAM:
        f.stream.onDataLost(f.offset, f.length, f.fin);
        return;
      case FrameKind.MTU_PROBE:
        this.#p.pmtu.onProbeLost(f.size, this.#p.clock.now());
        return;
      default:
        this.#p.control.onLost(f);
    }
  }

  /** Session closed. */
  clear(): void {
    this.#closed = true;
    this.#queue = [];
    this.#warmUp?.finish(this.#p.clock.now(), "closed");
    this.#warmUp = null;
  }
}

/**
 * The server's side of the PSK handshake, after a ClientHello with a valid cookie.
 *
 *   client                                   server
 *   ClientHello (+cookie)          ---->
 *                                  <----     ServerHello, [ServerKeyExchange], ServerHelloDone
 *   ClientKeyExchange, [CCS], Finished ---->
 *                                  <----     [CCS], Finished
 */
import { randomBytes } from "node:crypto";
import type { PeerAddr } from "./connection.ts";
import { ascii } from "./bytes.ts";
import { type CipherSuite, RecordCipher, SUITES } from "./cipher.ts";
import { AlertDescription, DTLS_1_2, ExtensionType, HandshakeType } from "./constants.ts";
import { type EphemeralKey, generateEphemeral, SUPPORTED_GROUPS } from "./ecdh.ts";
import { DtlsError } from "./errors.ts";
import {
  Handshake,
  type HandshakeMessage,
  type HandshakeTimers,
  type RecordIO,
} from "./handshake.ts";
import {
  type ClientHello,
  connectionIdExtension,
  decodeClientKeyExchange,
  decodeConnectionId,
  decodeSupportedGroups,
  EC_POINT_FORMATS,
  encodeEcdhePskServerKeyExchange,
  encodeServerHello,
  EXTENDED_MASTER_SECRET,
  type Extension,
  hasExtension,
  RENEGOTIATION_INFO,
  RETURN_ROUTABILITY_CHECK,
} from "./messages.ts";
import { finishedVerifyData, keyBlock, masterSecret, pskPremaster } from "./prf.ts";

/**
 * Finds the PSK for an identity (a domain); undefined if unknown. `peer` is the
 * handshake's source address (for bounding lookups per address).
 */
export type PskLookup = (identity: string, peer: PeerAddr) => Promise<Uint8Array | undefined>;

/** TLS_EMPTY_RENEGOTIATION_INFO_SCSV (RFC 5746 3.3). */
const EMPTY_RI_SCSV = 0x00ff;

export class ServerHandshake extends Handshake {
  #suite: CipherSuite | undefined;
  #ems = false;
  #ephemeral: EphemeralKey | undefined;
  #clientRandom: Uint8Array = new Uint8Array(0);
  readonly serverRandom = new Uint8Array(randomBytes(32));
  #master: Uint8Array | undefined;
  #state: "hello" | "keyExchange" | "finished" = "hello";
  identity = "";

  constructor(
    io: RecordIO,
    timers: HandshakeTimers,
    readonly lookupPsk: (identity: string) => Promise<Uint8Array | undefined>,
    readonly onDone: (error: DtlsError | undefined) => void,
    /**
     * Gives this connection a CID of its own. When set and the client offers both
     * connection_id and rrc, the server negotiates a CID (RFC 9146) and follows
     * the client's address changes (RFC 9853); a client that offers a CID without
     * rrc gets none, since an address change could not be validated.
     */
    readonly allocateCid?: () => Uint8Array,
  ) {
    super(io, timers);
  }

  get suite(): CipherSuite | undefined {
    return this.#suite;
  }
  get clientRandom(): Uint8Array {
    return this.#clientRandom;
  }

  /** Starts from the cookie-bearing ClientHello (whole message, already decoded). */
  start(ch: ClientHello, raw: Uint8Array, messageSeq: number): void {
    this.receiveSeq = messageSeq + 1;
    this.nextSendSeq = messageSeq;
    this.addToTranscript(raw);
    this.#clientRandom = ch.random;

    const offered = new Set(ch.cipherSuites);
    const groups = ch.extensions.find((e) => e.type === ExtensionType.SupportedGroups);
    const clientGroups = groups ? decodeSupportedGroups(groups.data) : [];
    const group = SUPPORTED_GROUPS.find((g) => clientGroups.includes(g));
    this.#suite = SUITES.find((s) => offered.has(s.id) && (!s.ecdhe || group !== undefined));
    if (!this.#suite) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          "No cipher suite in common",
          AlertDescription.HandshakeFailure,
        ),
      );
    }
    if (!ch.compressionMethods.includes(0)) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          "Client offers no null compression",
          AlertDescription.IllegalParameter,
        ),
      );
    }
    this.#ems = hasExtension(ch.extensions, ExtensionType.ExtendedMasterSecret);
    const exts: Extension[] = [];
    if (this.#ems) exts.push(EXTENDED_MASTER_SECRET);
    if (
      hasExtension(ch.extensions, ExtensionType.RenegotiationInfo) || offered.has(EMPTY_RI_SCSV)
    ) {
      exts.push(RENEGOTIATION_INFO);
    }
    if (this.#suite.ecdhe && hasExtension(ch.extensions, ExtensionType.EcPointFormats)) {
      exts.push(EC_POINT_FORMATS);
    }
    const theirCid = decodeConnectionId(ch.extensions);
    if (theirCid?.error !== undefined) {
      return this.fail(
        new DtlsError("HANDSHAKE_FAILED", theirCid.error, AlertDescription.DecodeError),
      );
    }
    if (
      theirCid && this.allocateCid &&
      hasExtension(ch.extensions, ExtensionType.ReturnRoutabilityCheck)
    ) {
      const ours = this.allocateCid();
      exts.push(connectionIdExtension(ours), RETURN_ROUTABILITY_CHECK);
      this.io.useConnectionIds({ send: theirCid.value, receive: ours, rrc: true });
    }
    const flight = [
      this.message(
        HandshakeType.ServerHello,
        encodeServerHello({
          version: DTLS_1_2,
          random: this.serverRandom,
          sessionId: new Uint8Array(0), // no resumption
          cipherSuite: this.#suite.id,
          compressionMethod: 0,
          extensions: exts,
        }),
      ),
    ];
    if (this.#suite.ecdhe) {
      this.#ephemeral = generateEphemeral(group!);
      flight.push(this.message(
        HandshakeType.ServerKeyExchange,
        encodeEcdhePskServerKeyExchange({
          hint: new Uint8Array(0),
          group: this.#ephemeral.group,
          publicKey: this.#ephemeral.publicKey,
        }),
      ));
    }
    flight.push(this.message(HandshakeType.ServerHelloDone, new Uint8Array(0)));
    this.#state = "keyExchange";
    this.sendFlight(flight, false);
  }

  protected async onMessage(msg: HandshakeMessage): Promise<void> {
    if (this.#state === "keyExchange" && msg.type === HandshakeType.ClientKeyExchange) {
      this.flightAcknowledged();
      return await this.#onClientKeyExchange(msg);
    }
    if (this.#state === "finished" && msg.type === HandshakeType.Finished && msg.epoch === 1) {
      return this.#onFinished(msg);
    }
    this.fail(
      new DtlsError(
        "HANDSHAKE_FAILED",
        `Unexpected handshake message ${msg.type}`,
        AlertDescription.UnexpectedMessage,
      ),
    );
  }

  async #onClientKeyExchange(msg: HandshakeMessage): Promise<void> {
    const suite = this.#suite!;
    const cke = decodeClientKeyExchange(msg.body, suite.ecdhe);
    if (cke.error !== undefined) {
      return this.fail(new DtlsError("HANDSHAKE_FAILED", cke.error, AlertDescription.DecodeError));
    }
    this.addToTranscript(msg.raw);
    const sessionHash = this.#ems ? this.transcriptHash() : undefined;
    this.identity = ascii.decode(cke.value.identity);
    let psk: Uint8Array | undefined;
    try {
      psk = await this.lookupPsk(this.identity);
    } catch {
      return this.fail(
        new DtlsError("HANDSHAKE_FAILED", "PSK lookup failed", AlertDescription.InternalError),
      );
    }
    if (this.finished || this.failed) return;
    if (!psk) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          "Unknown PSK identity",
          AlertDescription.UnknownPskIdentity,
        ),
      );
    }
    let ecdhSecret: Uint8Array | undefined;
    if (suite.ecdhe) {
      ecdhSecret = this.#ephemeral!.deriveSecret(cke.value.publicKey!);
      if (!ecdhSecret) {
        return this.fail(
          new DtlsError(
            "HANDSHAKE_FAILED",
            "Invalid ECDH public key",
            AlertDescription.IllegalParameter,
          ),
        );
      }
    }
    const pre = pskPremaster(psk, ecdhSecret);
    this.#master = masterSecret(pre, this.#clientRandom, this.serverRandom, sessionHash);
    const kb = keyBlock(suite, this.#master, this.#clientRandom, this.serverRandom);
    this.#state = "finished";
    this.io.installPendingKeys(
      new RecordCipher(suite, kb.clientKey, kb.clientIv),
      new RecordCipher(suite, kb.serverKey, kb.serverIv),
    );
  }

  #onFinished(msg: HandshakeMessage): void {
    if (!this.peerFinishedVerifies(msg.body, this.#master!, "client")) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          "Client Finished does not verify",
          AlertDescription.DecryptError,
        ),
      );
    }
    this.addToTranscript(msg.raw);
    const verify = finishedVerifyData(this.#master!, "server", this.transcriptHash());
    const fin = this.message(HandshakeType.Finished, verify);
    this.sendFlight(["ccs", fin], true);
    this.succeed();
  }
}

/**
 * The client's side of the PSK handshake.
 *
 *   ClientHello             ---->
 *                           <----   HelloVerifyRequest (cookie)      (optional)
 *   ClientHello (+cookie)   ---->
 *                           <----   ServerHello, [ServerKeyExchange], ServerHelloDone
 *   ClientKeyExchange, CCS, Finished ---->
 *                           <----   CCS, Finished
 */
import { randomBytes } from "node:crypto";
import { utf8 } from "./bytes.ts";
import { type CipherSuite, RecordCipher, suiteById } from "./cipher.ts";
import { AlertDescription, DTLS_1_2, ExtensionType, HandshakeType } from "./constants.ts";
import { generateEphemeral, SUPPORTED_GROUPS } from "./ecdh.ts";
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
  decodeConnectionId,
  decodeEcdhePskServerKeyExchange,
  decodeHelloVerifyRequest,
  decodePskServerKeyExchange,
  decodeServerHello,
  EC_POINT_FORMATS,
  encodeClientHello,
  encodeClientKeyExchange,
  EXTENDED_MASTER_SECRET,
  hasExtension,
  RENEGOTIATION_INFO,
  RETURN_ROUTABILITY_CHECK,
  supportedGroupsExtension,
} from "./messages.ts";
import { finishedVerifyData, keyBlock, masterSecret, pskPremaster } from "./prf.ts";

type State = "hello" | "serverHello" | "serverKeyExchange" | "serverHelloDone" | "finished";

export class ClientHandshake extends Handshake {
  readonly #hello: ClientHello;
  #state: State = "hello";
  #suite: CipherSuite | undefined;
  #ems = false;
  #serverRandom: Uint8Array = new Uint8Array(0);
  #serverPublic: Uint8Array | undefined;
  #serverGroup = 0;
  #master: Uint8Array | undefined;

  constructor(
    io: RecordIO,
    timers: HandshakeTimers,
    readonly identity: string,
    readonly psk: Uint8Array,
    suites: readonly CipherSuite[],
    readonly onDone: (error: DtlsError | undefined) => void,
    /**
     * Offer connection_id with an empty CID (we send the server's CID, it sends us
     * records without one: our address is the one that changes) and rrc.
     */
    readonly offerConnectionId = false,
    /** Called when the last flight (ClientKeyExchange to Finished) is first sent. */
    readonly onLastFlight?: () => void,
  ) {
    super(io, timers);
    const exts = [];
    if (suites.some((s) => s.ecdhe)) {
      exts.push(supportedGroupsExtension(SUPPORTED_GROUPS), EC_POINT_FORMATS);
    }
    exts.push(EXTENDED_MASTER_SECRET, RENEGOTIATION_INFO);
    if (offerConnectionId) {
      exts.push(connectionIdExtension(new Uint8Array(0)), RETURN_ROUTABILITY_CHECK);
    }
    this.#hello = {
      version: DTLS_1_2,
      random: new Uint8Array(randomBytes(32)),
      sessionId: new Uint8Array(0),
      cookie: new Uint8Array(0),
      cipherSuites: suites.map((s) => s.id),
      compressionMethods: new Uint8Array([0]),
      extensions: exts,
    };
  }

  get suite(): CipherSuite | undefined {
    return this.#suite;
  }

  /** The server has answered (a HelloVerifyRequest): it is up, and reachable from here. */
  get serverAnswered(): boolean {
    return this.#hello.cookie.length > 0;
  }

  start(): void {
    this.#sendHello();
  }

  #sendHello(): void {
    this.resetTranscript();
    const ch = this.message(HandshakeType.ClientHello, encodeClientHello(this.#hello));
    this.#state = "serverHello";
    this.sendFlight([ch], false);
  }

  #unexpected(msg: HandshakeMessage): void {
    this.fail(
      new DtlsError(
        "HANDSHAKE_FAILED",
        `Unexpected handshake message ${msg.type} in state ${this.#state}`,
        AlertDescription.UnexpectedMessage,
      ),
    );
  }

  protected onMessage(msg: HandshakeMessage): void {
    switch (this.#state) {
      case "serverHello":
        if (msg.type === HandshakeType.HelloVerifyRequest) return this.#onHelloVerify(msg);
        if (msg.type === HandshakeType.ServerHello) return this.#onServerHello(msg);
        return this.#unexpected(msg);
      case "serverKeyExchange":
        if (msg.type === HandshakeType.ServerKeyExchange) return this.#onServerKeyExchange(msg);
        if (msg.type === HandshakeType.ServerHelloDone && !this.#suite!.ecdhe) {
          return this.#onServerHelloDone(msg);
        }
        return this.#unexpected(msg);
      case "serverHelloDone":
        if (msg.type === HandshakeType.ServerHelloDone) return this.#onServerHelloDone(msg);
        return this.#unexpected(msg);
      case "finished":
        if (msg.type === HandshakeType.Finished && msg.epoch === 1) return this.#onFinished(msg);
        return this.#unexpected(msg);
      default:
        return this.#unexpected(msg);
    }
  }

  #onHelloVerify(msg: HandshakeMessage): void {
    const hvr = decodeHelloVerifyRequest(msg.body);
    if (hvr.error !== undefined) {
      return this.fail(new DtlsError("HANDSHAKE_FAILED", hvr.error, AlertDescription.DecodeError));
    }
    this.flightAcknowledged();
    // The stateless server copied our record sequence number into its reply and will
    // start its own numbering over (RFC 6347 4.2.1): forget epoch 0's window.
    this.io.resetReadWindow(0);
    this.#hello.cookie = hvr.value.cookie;
    this.#sendHello(); // message_seq 1; the transcript starts again (RFC 6347 4.2.6)
  }

  #onServerHello(msg: HandshakeMessage): void {
    const sh = decodeServerHello(msg.body);
    if (sh.error !== undefined) {
      return this.fail(new DtlsError("HANDSHAKE_FAILED", sh.error, AlertDescription.DecodeError));
    }
    const m = sh.value;
    if (m.version !== DTLS_1_2) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          `Server chose version ${m.version.toString(16)}`,
          AlertDescription.ProtocolVersion,
        ),
      );
    }
    const suite = suiteById(m.cipherSuite);
    if (!suite || !this.#hello.cipherSuites.includes(suite.id) || m.compressionMethod !== 0) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          "Server chose a suite or compression we did not offer",
          AlertDescription.IllegalParameter,
        ),
      );
    }
    const cid = decodeConnectionId(m.extensions);
    if (cid?.error !== undefined) {
      return this.fail(new DtlsError("HANDSHAKE_FAILED", cid.error, AlertDescription.DecodeError));
    }
    const rrc = hasExtension(m.extensions, ExtensionType.ReturnRoutabilityCheck);
    if ((cid || rrc) && !this.offerConnectionId) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          "Server sent connection_id or rrc, which we did not offer",
          AlertDescription.UnsupportedExtension,
        ),
      );
    }
    if (rrc && !cid) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          "Server sent rrc without connection_id",
          AlertDescription.IllegalParameter,
        ),
      );
    }
    if (cid) this.io.useConnectionIds({ send: cid.value, receive: new Uint8Array(0), rrc });
    this.flightAcknowledged();
    this.#suite = suite;
    this.#ems = hasExtension(m.extensions, ExtensionType.ExtendedMasterSecret);
    this.#serverRandom = m.random;
    this.addToTranscript(msg.raw);
    // ECDHE_PSK requires a ServerKeyExchange; plain PSK may send one (a hint) or not.
    this.#state = "serverKeyExchange";
  }

  #onServerKeyExchange(msg: HandshakeMessage): void {
    if (this.#suite!.ecdhe) {
      const ske = decodeEcdhePskServerKeyExchange(msg.body);
      if (ske.error !== undefined) {
        return this.fail(
          new DtlsError("HANDSHAKE_FAILED", ske.error, AlertDescription.DecodeError),
        );
      }
      if (!SUPPORTED_GROUPS.includes(ske.value.group as 29 | 23)) {
        return this.fail(
          new DtlsError(
            "HANDSHAKE_FAILED",
            `Server chose group ${ske.value.group}`,
            AlertDescription.IllegalParameter,
          ),
        );
      }
      this.#serverGroup = ske.value.group;
      this.#serverPublic = ske.value.publicKey;
    } else {
      const ske = decodePskServerKeyExchange(msg.body); // only an identity hint; we ignore it
      if (ske.error !== undefined) {
        return this.fail(
          new DtlsError("HANDSHAKE_FAILED", ske.error, AlertDescription.DecodeError),
        );
      }
    }
    this.addToTranscript(msg.raw);
    this.#state = "serverHelloDone";
  }

  #onServerHelloDone(msg: HandshakeMessage): void {
    this.addToTranscript(msg.raw);
    const suite = this.#suite!;
    let ecdhSecret: Uint8Array | undefined;
    let publicKey: Uint8Array | undefined;
    if (suite.ecdhe) {
      const eph = generateEphemeral(this.#serverGroup);
      ecdhSecret = eph.deriveSecret(this.#serverPublic!);
      if (!ecdhSecret) {
        return this.fail(
          new DtlsError(
            "HANDSHAKE_FAILED",
            "Invalid server ECDH key",
            AlertDescription.IllegalParameter,
          ),
        );
      }
      publicKey = eph.publicKey;
    }
    const identity = utf8.encode(this.identity);
    const cke = this.message(
      HandshakeType.ClientKeyExchange,
      encodeClientKeyExchange(publicKey ? { identity, publicKey } : { identity }),
    );
    const sessionHash = this.#ems ? this.transcriptHash() : undefined;
    const pre = pskPremaster(this.psk, ecdhSecret);
    this.#master = masterSecret(pre, this.#hello.random, this.#serverRandom, sessionHash);
    const kb = keyBlock(suite, this.#master, this.#hello.random, this.#serverRandom);
    this.io.installPendingKeys(
      new RecordCipher(suite, kb.serverKey, kb.serverIv),
      new RecordCipher(suite, kb.clientKey, kb.clientIv),
    );
    const verify = finishedVerifyData(this.#master, "client", this.transcriptHash());
    const fin = this.message(HandshakeType.Finished, verify);
    this.#state = "finished";
    this.sendFlight([cke, "ccs", fin], false);
    this.onLastFlight?.();
  }

  #onFinished(msg: HandshakeMessage): void {
    if (!this.peerFinishedVerifies(msg.body, this.#master!, "server")) {
      return this.fail(
        new DtlsError(
          "HANDSHAKE_FAILED",
          "Server Finished does not verify",
          AlertDescription.DecryptError,
        ),
      );
    }
    this.flightAcknowledged();
    this.dispose();
    this.succeed();
  }
}

// @ts-check
/**
 * rtc.js — the WebRTC mesh of a meeting: one RTCPeerConnection per other admitted member,
 * negotiated with "perfect negotiation" (W3C WebRTC §10.7 example) over the callroom
 * `offer` / `answer` / `candidate` / `renegotiate` events (SPEC §3.1).
 *
 * - Politeness comes from the two clientIds: the member whose clientId sorts first is
 *   impolite (its offer wins a glare), the other polite (rolls its own offer back). Both
 *   sides compute the same answer, so glare resolves itself.
 * - Trickle ICE: every local candidate is sent at once as `candidate`.
 * - A screen share is a second stream on the same connections: the sharer first sends
 *   `renegotiate` `{reason: "screen:<streamId>"}` (so the peer can tell the screen from
 *   the camera), then adds the track, which renegotiates; stopping sends
 *   `{reason: "screen-stop"}` and removes it. Any other `renegotiate` restarts ICE.
 * - A peer that reloaded its page has a new connection: its SDP session id (the `o=`
 *   line) changes, and the old connection is replaced by a fresh one.
 */

/** @typedef {import("./callroom-client.js").ClientInfo} ClientInfo */
/** @typedef {import("./callroom-client.js").ClientEvents} ClientEvents */
/** @typedef {import("./callroom-client.js").ServerEvents} ServerEvents */
/**
 * @typedef {<K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]) => boolean} SendFn
 */
/**
 * @typedef {{
 *   selfId: string,
 *   send: SendFn,
 *   grid: HTMLElement,
 *   ready: Promise<{stream: MediaStream | null, iceServers: RTCIceServer[]}>,
 *   onError: (message: string) => void,
 * }} MeshOptions
 */

/**
 * The session id of an SDP (`o=<user> <sess-id> ...`): constant for a connection's life.
 * @param {string} sdp
 * @returns {string | null}
 */
export function sdpSession(sdp) {
  const match = /^o=\S+ (\d+) /m.exec(sdp);
  return match ? match[1] : null;
}

/**
 * @param {string} self
 * @param {string} other
 * @returns {boolean} whether `self` is the polite side towards `other`
 */
export function isPolite(self, other) {
  return self > other;
}

export class Mesh {
  /** @param {MeshOptions} options */
  constructor(options) {
    this.options = options;
    /** @type {Map<string, Peer>} */
    this.peers = new Map();
    /** @type {MediaStream | null} */
    this.local = null;
    /** @type {MediaStream | null} */
    this.screen = null;
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    this.closed = false;
    /**
     * Calls made before the camera and the ICE servers are known, replayed in order
     * then: a peer's offer may come before our own media is ready, and must not be lost.
     * @type {(() => void)[] | null}
     */
    this.backlog = [];
    options.ready.then(({ stream, iceServers }) => {
      this.local = stream;
      this.iceServers = iceServers;
      const backlog = this.backlog ?? [];
      this.backlog = null;
      if (this.closed) return;
      for (const call of backlog) call();
    });
  }

  /**
   * Run `call` now, or once the mesh is ready.
   * @param {() => void} call
   * @returns {boolean} whether it ran now
   */
  now(call) {
    if (this.backlog === null) return true;
    this.backlog.push(call);
    return false;
  }

  /**
   * The connection to a member, created when missing.
   * @param {ClientInfo} info
   */
  ensure(info) {
    if (!this.now(() => this.ensure(info))) return;
    this.ensurePeer(info);
  }

  /** @param {ClientInfo} info */
  ensurePeer(info) {
    let peer = this.peers.get(info.clientId);
    if (!peer) {
      peer = new Peer(this, info);
      this.peers.set(info.clientId, peer);
    } else {
      peer.setName(info.displayName);
    }
    return peer;
  }

  /**
   * Keep connections to exactly these members (the admitted others of `room_state`).
   * @param {ClientInfo[]} members
   */
  reconcile(members) {
    if (!this.now(() => this.reconcile(members))) return;
    const wanted = new Set(members.map((member) => member.clientId));
    for (const id of [...this.peers.keys()]) if (!wanted.has(id)) this.remove(id);
    for (const member of members) this.ensurePeer(member);
  }

  /** @param {string} clientId */
  remove(clientId) {
    if (!this.now(() => this.remove(clientId))) return;
    const peer = this.peers.get(clientId);
    if (!peer) return;
    this.peers.delete(clientId);
    peer.close();
  }

  /**
   * Handle one signaling event from another member.
   * @param {"offer" | "answer" | "candidate" | "renegotiate"} event
   * @param {ServerEvents["offer"] | ServerEvents["answer"] | ServerEvents["candidate"] | ServerEvents["renegotiate"]} payload
   */
  signal(event, payload) {
    if (!this.now(() => this.signal(event, payload))) return;
    let peer = this.peers.get(payload.clientId);
    if (!peer) {
      if (event !== "offer") return; // late signals of a member that is gone
      peer = this.ensurePeer(payload);
    }
    if (event === "renegotiate" && "reason" in payload && payload.reason === "hello" && peer.pc.remoteDescription) {
      // The (polite) member has a new connection: its page was reloaded. Start afresh;
      // this side (impolite) makes the first offer of the new connection.
      this.remove(peer.clientId);
      this.ensurePeer(payload);
      return;
    }
    if ((event === "offer" || event === "answer") && "sdp" in payload) {
      const session = sdpSession(payload.sdp);
      if (peer.remoteSession !== null && session !== null && session !== peer.remoteSession) {
        // The member's page was reloaded: its old connection is gone for good. A fresh
        // one takes an offer; an answer belongs to the old one (the fresh one offers).
        this.remove(peer.clientId);
        peer = this.ensurePeer(payload);
        if (event === "answer") return;
      }
      peer.remoteSession = session;
    }
    const current = peer;
    current.enqueue(() => current.onSignal(event, payload));
  }

  /** @param {MediaStream} stream */
  startScreen(stream) {
    if (!this.now(() => this.startScreen(stream))) return;
    this.screen = stream;
    for (const peer of this.peers.values()) peer.enqueue(() => peer.addScreen());
  }

  stopScreen() {
    const stream = this.screen;
    this.screen = null;
    if (!stream) return;
    for (const peer of this.peers.values()) peer.enqueue(() => peer.removeScreen());
    for (const track of stream.getTracks()) track.stop();
  }

  /** @param {boolean} enabled */
  setAudio(enabled) {
    if (!this.now(() => this.setAudio(enabled))) return;
    for (const track of this.local?.getAudioTracks() ?? []) track.enabled = enabled;
  }

  /** @param {boolean} enabled */
  setVideo(enabled) {
    if (!this.now(() => this.setVideo(enabled))) return;
    for (const track of this.local?.getVideoTracks() ?? []) track.enabled = enabled;
  }

  close() {
    this.closed = true;
    this.stopScreen();
    for (const id of [...this.peers.keys()]) this.remove(id);
    for (const track of this.local?.getTracks() ?? []) track.stop();
  }
}

class Peer {
  /**
   * @param {Mesh} mesh
   * @param {ClientInfo} info
   */
  constructor(mesh, info) {
    this.mesh = mesh;
    this.clientId = info.clientId;
    this.polite = isPolite(mesh.options.selfId, info.clientId);
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.closed = false;
    /** @type {string | null} */
    this.remoteSession = null;
    /** @type {string | null} */
    this.screenStreamId = null;
    /** @type {RTCRtpSender[]} */
    this.screenSenders = [];
    const { tile, video, audio, label } = this.makeTile(info.displayName);
    this.tile = tile;
    this.video = video;
    this.audio = audio;
    this.label = label;
    /** @type {HTMLElement | null} */
    this.screenTile = null;
    this.pc = new RTCPeerConnection({ iceServers: mesh.iceServers });
    this.wire();
    this.localAdded = false;
    /** @type {RTCIceCandidateInit[]} candidates that came before the description they need */
    this.pendingCandidates = [];
    /** @type {Promise<void>} */
    this.queue = Promise.resolve();
    // The impolite side makes the first offer; the polite side adds its media when it
    // answers. So the first negotiation never collides: in a collision the polite side
    // rolls back an offer whose candidates are already on their way and may be lost.
    // A polite page whose peer may hold a connection to its previous incarnation (a
    // reload) says "hello": the peer then replaces that connection and offers.
    if (this.polite) {
      mesh.options.send("renegotiate", { targetClientId: this.clientId, reason: "hello" });
    } else {
      this.enqueue(() => this.addLocal());
    }
  }

  /** @param {string} name */
  makeTile(name) {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.testid = "video-tile";
    tile.dataset.clientId = this.clientId;
    tile.dataset.connectionState = "new";
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // sound plays through the <audio> element; muted autoplays
    video.setAttribute("muted", "");
    const audio = document.createElement("audio");
    audio.autoplay = true;
    const label = document.createElement("span");
    label.className = "tile-label";
    label.textContent = name;
    tile.append(video, audio, label);
    this.mesh.options.grid.append(tile);
    return { tile, video, audio, label };
  }

  /** @param {string} name */
  setName(name) {
    this.label.textContent = name;
  }

  /** @param {() => Promise<void> | void} step */
  enqueue(step) {
    this.queue = this.queue
      .then(() => (this.closed ? undefined : step()))
      .catch((error) => {
        if (!this.closed) this.mesh.options.onError(`connection to a peer: ${describe(error)}`);
      });
  }

  wire() {
    const { pc } = this;
    const target = this.clientId;
    const send = this.mesh.options.send;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        const sdp = pc.localDescription?.sdp;
        if (sdp && !this.closed) send("offer", { targetClientId: target, sdp, type: "offer" });
      } catch (error) {
        if (!this.closed) this.mesh.options.onError(`offer: ${describe(error)}`);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (!candidate || !candidate.candidate || this.closed) return; // trickle ICE
      send("candidate", {
        targetClientId: target,
        candidate: candidate.candidate,
        sdpMid: candidate.sdpMid,
        sdpMLineIndex: candidate.sdpMLineIndex,
      });
    };
    pc.onconnectionstatechange = () => {
      this.tile.dataset.connectionState = pc.connectionState;
      if (pc.connectionState === "failed" && !this.closed) pc.restartIce();
    };
    pc.ontrack = ({ track, streams }) => {
      const stream = streams[0] ?? new MediaStream([track]);
      if (stream.id === this.screenStreamId) {
        this.showScreen(stream);
      } else if (track.kind === "video") {
        this.video.srcObject = stream;
        this.video.play().catch(() => {}); // autoplay of a muted video may still be deferred
      } else {
        this.audio.srcObject = stream;
      }
    };
  }

  addLocal() {
    if (this.localAdded) return;
    this.localAdded = true;
    const local = this.mesh.local;
    const kinds = new Set();
    for (const track of local?.getTracks() ?? []) {
      if (!local) break;
      this.pc.addTrack(track, local); // reuses a transceiver a remote offer made
      kinds.add(track.kind);
    }
    if (!this.polite) {
      // Without a camera or microphone, still receive the peer's (and still make the
      // first offer, which the polite side waits for).
      for (const kind of ["audio", "video"]) {
        if (!kinds.has(kind)) this.pc.addTransceiver(kind, { direction: "recvonly" });
      }
    }
    if (this.mesh.screen) this.addScreen();
  }

  /** The remote description is set: candidates that came early now fit. */
  async flushCandidates() {
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const candidate of pending) {
      try {
        await this.pc.addIceCandidate(candidate);
      } catch {
        // a candidate of an offer that was ignored or rolled back: not for this session
      }
    }
  }

  /**
   * @param {"offer" | "answer" | "candidate" | "renegotiate"} event
   * @param {any} payload
   */
  async onSignal(event, payload) {
    const { pc } = this;
    if (event === "offer" || event === "answer") {
      const collision = event === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      await pc.setRemoteDescription({ type: event, sdp: payload.sdp }); // rolls back on glare
      if (event === "offer") {
        this.addLocal(); // the polite side's media goes into its first answer
        await pc.setLocalDescription();
        const sdp = pc.localDescription?.sdp;
        if (sdp) this.mesh.options.send("answer", { targetClientId: this.clientId, sdp, type: "answer" });
      }
      await this.flushCandidates();
    } else if (event === "candidate") {
      /** @type {RTCIceCandidateInit} */
      const candidate = {
        candidate: payload.candidate,
        sdpMid: payload.sdpMid ?? null,
        sdpMLineIndex: payload.sdpMLineIndex ?? null,
      };
      if (!pc.remoteDescription) {
        this.pendingCandidates.push(candidate);
        return;
      }
      try {
        await pc.addIceCandidate(candidate);
      } catch (error) {
        if (!this.ignoreOffer) throw error; // candidates of an ignored offer may not fit
      }
    } else {
      const reason = String(payload.reason ?? "");
      if (reason.startsWith("screen:")) {
        this.screenStreamId = reason.slice("screen:".length);
      } else if (reason === "screen-stop") {
        this.screenStreamId = null;
        this.hideScreen();
      } else if (reason === "hello") {
        // Handled by Mesh.signal (a fresh connection when this one has a past).
      } else {
        pc.restartIce();
      }
    }
  }

  addScreen() {
    const stream = this.mesh.screen;
    if (!stream || this.screenSenders.length) return;
    this.mesh.options.send("renegotiate", { targetClientId: this.clientId, reason: `screen:${stream.id}` });
    this.screenSenders = stream.getTracks().map((track) => this.pc.addTrack(track, stream));
  }

  removeScreen() {
    if (!this.screenSenders.length) return;
    this.mesh.options.send("renegotiate", { targetClientId: this.clientId, reason: "screen-stop" });
    for (const sender of this.screenSenders) this.pc.removeTrack(sender);
    this.screenSenders = [];
  }

  /** @param {MediaStream} stream */
  showScreen(stream) {
    if (!this.screenTile) {
      const tile = document.createElement("div");
      tile.className = "tile screen";
      tile.dataset.testid = "screen-tile";
      tile.dataset.clientId = this.clientId;
      const video = document.createElement("video");
      video.autoplay = true;
      video.playsInline = true;
      video.muted = true;
      video.setAttribute("muted", "");
      const label = document.createElement("span");
      label.className = "tile-label";
      label.textContent = `${this.label.textContent}'s screen`;
      tile.append(video, label);
      this.mesh.options.grid.prepend(tile);
      this.screenTile = tile;
    }
    const video = /** @type {HTMLVideoElement} */ (this.screenTile.querySelector("video"));
    video.srcObject = stream;
    video.play().catch(() => {});
    stream.onremovetrack = () => {
      if (stream.getTracks().length === 0) this.hideScreen();
    };
  }

  hideScreen() {
    this.screenTile?.remove();
    this.screenTile = null;
  }

  close() {
    this.closed = true;
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.ontrack = null;
    this.pc.close();
    this.tile.remove();
    this.hideScreen();
  }
}

/** @param {unknown} error */
function describe(error) {
  return error instanceof Error ? error.message : String(error);
}

// The mixer: every stem an AudioBuffer played through its own gain, all started at the same
// AudioContext time, so the stems stay sample-locked to each other (separate <audio>
// elements drift apart). Seeking restarts every source at the new offset.

export class Mixer {
  constructor() {
    this.ctx = null;
    this.tracks = new Map(); // name → {buffer, gain, source, muted, solo, volume}
    this.offset = 0; // seconds into the song when paused, or where the current play started
    this.startedAt = null; // ctx time at which `offset` was playing; null when paused
    this.onended = () => {};
  }

  context() {
    // created on first use; browsers start it suspended until a user gesture resumes it
    this.ctx ??= new AudioContext();
    return this.ctx;
  }

  async add(name, encoded) {
    const buffer = await this.context().decodeAudioData(encoded);
    const gain = this.ctx.createGain();
    gain.connect(this.ctx.destination);
    this.tracks.set(name, { buffer, gain, source: null, muted: false, solo: false, volume: 1 });
    this.apply();
  }

  get duration() {
    let d = 0;
    for (const t of this.tracks.values()) d = Math.max(d, t.buffer.duration);
    return d;
  }

  get playing() {
    return this.startedAt !== null;
  }

  get time() {
    if (!this.playing) return this.offset;
    // the sources start a little after the press: until then the clock stands at the offset
    // (left to run from there it showed "-1:60.0" for those 50 ms)
    return Math.min(this.duration, this.offset + Math.max(0, this.ctx.currentTime - this.startedAt));
  }

  async play() {
    if (this.playing || this.starting || !this.tracks.size) return;
    this.starting = true; // a second press while the context resumes must not start a second set
    try {
      await this.context().resume();
    } finally {
      this.starting = false;
    }
    if (this.offset >= this.duration) this.offset = 0;
    const at = this.ctx.currentTime + 0.05; // a little ahead, so that every source starts on the same sample
    this.startedAt = at;
    for (const t of this.tracks.values()) {
      const source = this.ctx.createBufferSource();
      source.buffer = t.buffer;
      source.connect(t.gain);
      source.start(at, Math.min(this.offset, t.buffer.duration));
      t.source = source;
    }
    const longest = [...this.tracks.values()].reduce((a, b) => (b.buffer.duration > a.buffer.duration ? b : a));
    longest.source.onended = () => {
      // stop() clears the handler, so this is the song running out, not a pause or a seek
      this.stop();
      this.offset = 0;
      this.onended();
    };
  }

  stop() {
    for (const t of this.tracks.values()) {
      if (t.source) {
        t.source.onended = null;
        t.source.stop();
        t.source.disconnect();
        t.source = null;
      }
    }
    this.startedAt = null;
  }

  pause() {
    if (!this.playing) return;
    this.offset = this.time;
    this.stop();
  }

  toggle() {
    return this.playing ? this.pause() : this.play();
  }

  async seek(seconds) {
    const wasPlaying = this.playing;
    this.stop();
    this.offset = Math.max(0, Math.min(seconds, this.duration));
    if (wasPlaying) await this.play();
  }

  set(name, change) {
    Object.assign(this.tracks.get(name), change);
    this.apply();
  }

  // What each stem is heard at: soloed stems only when any is soloed, else all but the muted.
  level(name) {
    const t = this.tracks.get(name);
    const soloing = [...this.tracks.values()].some((x) => x.solo);
    return (soloing ? t.solo : !t.muted) ? t.volume : 0;
  }

  apply() {
    for (const [name, t] of this.tracks) t.gain.gain.value = this.level(name);
  }

  close() {
    this.stop();
    this.ctx?.close();
    this.ctx = null;
    this.tracks.clear();
  }
}

#!/usr/bin/env node
// Load generator for the study-time benchmarks: one process holding many
// WebSocket clients, driven by bench/run.py over stdin/stdout (one JSON
// object per line each way).
//
//   node loadgen.js '{"url": "ws://127.0.0.1:PORT/api/study-time", "mode": "hold", ...}'
//
// Config (argv[2], JSON):
//   url          WebSocket URL without query string
//   mode         "hold": each connection heartbeats every `interval` seconds,
//                        phases spread at random over the interval;
//                "loop": closed loop, the next heartbeat as soon as the reply arrives
//   interval     seconds between heartbeats in "hold" mode
//   sources      loopback source addresses to spread connections over (127.0.0.2, ...)
//   prefix       userId prefix, unique per generator process
//   concurrency  handshakes in flight at once while ramping
//   maxSeconds   hard lifetime: the process resets everything and exits after it
//
// Commands (stdin):
//   {"cmd": "open", "count": N, "deadline": S}
//                                    ramp up to N connections in total, starting no
//                                    handshake after S seconds
//   {"cmd": "start"}                 "loop" mode: start every connection's loop
//   {"cmd": "measure", "seconds": S, "grace": G}
//                                    count replies and round trips of the heartbeats sent
//                                    in the next S seconds, waiting G more for late replies
//   {"cmd": "stop"}                  reset every connection and exit
// Each command is answered with one JSON line on stdout.
//
// Connections are closed with a TCP reset (socket.resetAndDestroy), so no
// TIME_WAIT sockets pile up on the loopback addresses between runs.
"use strict";

const readline = require("readline");
const WebSocket = require("ws");

const config = JSON.parse(process.argv[2]);
const mode = config.mode || "hold";
const intervalMs = (config.interval || (mode === "loop" ? 20 : 5)) * 1000;
const sources = config.sources || ["127.0.0.2"];
const prefix = config.prefix || "g0";
const concurrency = config.concurrency || 100;
const maxSeconds = config.maxSeconds || 600;

const conns = []; // every client ever opened (open or not)
let openCount = 0;
let failed = 0;
const closeCodes = {};

// The measurement window: counters reset by "measure".
let measuring = false;
let rtts = [];
let replies = 0;
let errorReplies = 0;
let skipped = 0; // heartbeats not sent in "hold" mode because the last reply was still due
// "loop" mode starts only on "start", once every connection is open: a loop
// already saturating the server would otherwise starve the handshakes.
let looping = false;
// The window, in performance.now() milliseconds: "hold" mode counts the heartbeats
// *scheduled* inside it, so a timer firing late in a busy generator cannot move a
// beat out of the window, and every connection has exactly window/interval beats.
let windowStart = Infinity;
let windowEnd = -Infinity;

// A heartbeat's timestamp changes once a second; building it per message would
// make the generator, not the server, the thing being measured.
let stampSecond = -1;
let heartbeatText = "";
function heartbeat() {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== stampSecond) {
    stampSecond = second;
    heartbeatText = JSON.stringify({ type: "heartbeat", timestamp: new Date(second * 1000).toISOString() });
  }
  return heartbeatText;
}

function send(c, scheduled) {
  if (c.ws.readyState !== WebSocket.OPEN) return;
  if (c.sentAt !== 0) {
    skipped += measuring ? 1 : 0;
    return;
  }
  c.sentAt = performance.now();
  c.sentMeasuring =
    mode === "hold" ? windowStart <= scheduled && scheduled < windowEnd : measuring;
  c.ws.send(heartbeat());
}

function scheduleHold(c, delay) {
  c.next = performance.now() + delay;
  c.timer = setTimeout(function tick() {
    send(c, c.next);
    // Drift-free: the next beat is one interval after the scheduled one.
    c.next += intervalMs;
    c.timer = setTimeout(tick, Math.max(0, c.next - performance.now()));
  }, delay);
}

function onMessage(c, data) {
  const text = data.toString();
  if (!c.connected) {
    c.connected = true;
    c.resolveOpen(true);
    // "loop" connections waiting for "start" heartbeat every interval meanwhile:
    // a long ramp must not leave them silent past the server's heartbeat timeout.
    if (mode === "hold" || !looping) scheduleHold(c, Math.random() * intervalMs);
    else send(c);
    return;
  }
  if (c.sentAt === 0) return; // not an answer to a heartbeat
  const rtt = performance.now() - c.sentAt;
  c.sentAt = 0;
  // A reply counts when its heartbeat was sent inside the window, however late it
  // arrives: every connection sends the same number, so max/min shows fairness.
  if (c.sentMeasuring) {
    // Python's json.dumps writes '"status": "success"', Node's and ours without the space.
    if (text.includes('"success"')) {
      replies++;
      c.replies++;
      rtts.push(Math.round(rtt * 1000) / 1000);
    } else {
      errorReplies++;
    }
  }
  if (looping) send(c);
}

function openOne(index) {
  return new Promise((resolve) => {
    const query = `?userId=${prefix}-${index}&courseId=bench`;
    const ws = new WebSocket(config.url + query, {
      localAddress: sources[index % sources.length],
      perMessageDeflate: false,
      handshakeTimeout: 30000,
    });
    const c = {
      ws,
      connected: false,
      sentAt: 0,
      sentMeasuring: false,
      replies: 0,
      timer: null,
      next: 0,
      resolveOpen: resolve,
    };
    conns.push(c);
    ws.on("message", (data) => onMessage(c, data));
    ws.on("error", () => {
      if (!c.connected) resolve(false);
    });
    ws.on("close", (code) => {
      closeCodes[code] = (closeCodes[code] || 0) + 1;
      if (c.timer) clearTimeout(c.timer);
      if (c.connected) openCount--;
      if (!c.connected) resolve(false);
    });
  });
}

async function rampTo(total, deadlineSeconds) {
  const start = performance.now();
  // No new handshakes after the deadline: a slow server yields fewer connections, not a hang.
  const deadline = start + (deadlineSeconds || Infinity) * 1000;
  const cpuStart = process.cpuUsage();
  let next = conns.length;
  const target = conns.length + Math.max(0, total - openCount);
  let opened = 0;
  async function worker() {
    while (next < target && performance.now() < deadline) {
      const index = next++;
      if (await openOne(index)) {
        openCount++;
        opened++;
      } else {
        failed++;
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (performance.now() - start) / 1000;
  return { event: "opened", open: openCount, opened, failed, seconds, cpu_seconds: cpuSeconds(cpuStart) };
}

function cpuSeconds(since) {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

function measure(seconds, grace) {
  return new Promise((resolve) => {
    for (const c of conns) c.replies = 0;
    rtts = [];
    replies = 0;
    errorReplies = 0;
    skipped = 0;
    measuring = true;
    const cpuStart = process.cpuUsage();
    const start = performance.now();
    windowStart = start;
    windowEnd = start + seconds * 1000;
    setTimeout(() => {
      measuring = false;
      const wall = (performance.now() - start) / 1000;
      setTimeout(() => finish(wall), grace * 1000); // replies still due for the window's heartbeats
    }, seconds * 1000);
    function finish(wall) {
      windowStart = Infinity;
      windowEnd = -Infinity;
      let min = Infinity;
      let max = 0;
      for (const c of conns) {
        if (!c.connected || c.ws.readyState !== WebSocket.OPEN) continue;
        if (c.replies < min) min = c.replies;
        if (c.replies > max) max = c.replies;
      }
      resolve({
        event: "measured",
        seconds: wall,
        open: openCount,
        replies,
        error_replies: errorReplies,
        skipped,
        per_conn_min: min === Infinity ? 0 : min,
        per_conn_max: max,
        cpu_seconds: cpuSeconds(cpuStart),
        close_codes: closeCodes,
        rtt_ms: rtts,
      });
    }
  });
}

function resetAll() {
  for (const c of conns) {
    if (c.timer) clearTimeout(c.timer);
    const socket = c.ws._socket;
    if (socket && typeof socket.resetAndDestroy === "function") socket.resetAndDestroy();
    else c.ws.terminate();
  }
}

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function stop(code) {
  resetAll();
  // Give the resets a moment to leave before the process goes.
  setTimeout(() => process.exit(code), 200);
}

setTimeout(() => {
  process.stderr.write(`loadgen ${prefix}: lifetime of ${maxSeconds}s reached, stopping\n`);
  stop(3);
}, maxSeconds * 1000).unref();

let queue = Promise.resolve();
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  queue = queue.then(async () => {
    if (command.cmd === "open") reply(await rampTo(command.count, command.deadline));
    else if (command.cmd === "start") {
      looping = mode === "loop";
      for (const c of conns) {
        if (!looping || !c.connected) continue;
        clearTimeout(c.timer);
        c.timer = null;
        send(c);
      }
      reply({ event: "started" });
    } else if (command.cmd === "measure") reply(await measure(command.seconds, command.grace || 0));
    else if (command.cmd === "stop") {
      reply({ event: "stopped", cpu_seconds: cpuSeconds() });
      stop(0);
    } else reply({ event: "error", message: `unknown command ${command.cmd}` });
  });
}).on("close", () => stop(0));

reply({ event: "ready", pid: process.pid });

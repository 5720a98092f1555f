#!/usr/bin/env node
// Baseline: a Node `ws` server that answers heartbeats like study-time does,
// with no auth, accounting or storage. bench/run.py starts it next to ours.
//
//   node node_server.js PORT [PROCESSES]
//
// With PROCESSES > 1 the cluster module forks that many workers sharing the port.
"use strict";

const cluster = require("cluster");
const WebSocket = require("ws");

const port = Number(process.argv[2]);
const processes = Number(process.argv[3] || 1);

if (processes > 1 && cluster.isPrimary) {
  for (let i = 0; i < processes; i++) cluster.fork();
  process.on("SIGTERM", () => {
    for (const worker of Object.values(cluster.workers)) worker.kill("SIGTERM");
    process.exit(0);
  });
} else {
  const server = new WebSocket.Server({ host: "127.0.0.1", port, path: "/api/study-time", perMessageDeflate: false });
  let counter = 0;
  server.on("connection", (ws) => {
    let studyTime = 0;
    ws.send(JSON.stringify({ type: "connected", status: "success", sessionId: String(++counter), studyTime }));
    ws.on("message", (data) => {
      let message;
      try {
        message = JSON.parse(data.toString());
      } catch {
        ws.send(JSON.stringify({ type: "error", status: "error", code: "invalid_json" }));
        return;
      }
      if (message.type === "heartbeat") {
        studyTime += 1;
        ws.send(JSON.stringify({ type: "heartbeat_response", status: "success", studyTime }));
      }
    });
    ws.on("error", () => {});
  });
  process.on("SIGTERM", () => process.exit(0));
}

// A minimal Switchboard chat client for Node: loads the history, watches one peer's presence,
// says hello, and prints everything it receives as JSON lines.
//
//   SWITCHBOARD_URL=http://localhost:3000 TOKEN=<jwt> PEER=bob node chat.mjs
import { io } from "socket.io-client";

const url = process.env.SWITCHBOARD_URL || "http://localhost:3000";
const peer = process.env.PEER;
const print = (event, data) => console.log(JSON.stringify({ event, data }));

const socket = io(url, { auth: { token: process.env.TOKEN } });

socket.on("authenticated", async ({ userId }) => {
  print("authenticated", { userId });
  // Missed direct messages: everything to or from me (a real client keeps its last id).
  const history = await socket.emitWithAck("message:sync", { after: 0 });
  for (const m of history.messages ?? []) print("history", m);
  if (!peer) return;
  const { statuses } = await socket.emitWithAck("presence:subscribe", { userIds: [peer] });
  print("presence", statuses);
  // A clientMsgId makes a retry after a lost ack safe: the server stores the message once.
  const sent = await socket.emitWithAck("message:send", {
    to: peer,
    text: `hello from node, ${userId}`,
    clientMsgId: `${userId}-hello`,
  });
  print("sent", sent);
});

for (const event of ["message:received", "friend:online", "friend:offline", "friend:status", "error"]) {
  socket.on(event, (data) => print(event, data));
}
socket.on("connect_error", (err) => print("connect_error", { message: err.message, data: err.data }));
socket.on("disconnect", (reason) => print("disconnect", { reason }));

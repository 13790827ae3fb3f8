// Inbox and outbox: GET /transfers every 1.5 s (polling: the same API the CLI reads, no stream to keep).
import { api, say, start } from "./app.js";
import { upsert } from "./transfers.js";

const POLL_MS = 1500;
await start("inbox.html");
const inbox = document.querySelector("#inbox tbody");
const outbox = document.querySelector("#outbox tbody");
const opened = document.getElementById("opened");

async function refresh() {
  try {
    const { transfers } = await api("GET", "/transfers");
    for (const t of [...transfers].reverse()) upsert(t.direction === "in" ? inbox : outbox, t, opened);
  } catch (error) {
    say(`Could not read the transfers: ${error.message}`);
  }
  setTimeout(refresh, POLL_MS);
}
refresh();

// The example page, used the way a person would (by role and accessible
// name): unlock, create a conversation, send a message, reload, unlock
// again and find it; a wrong passphrase says so.

import { test } from "node:test";
import assert from "node:assert/strict";
import { browserSuite } from "./harness.mjs";

const suite = browserSuite();

async function unlock(page, passphrase) {
  await page.getByLabel("Passphrase", { exact: true }).fill(passphrase);
  await page.getByRole("button", { name: "Unlock" }).click();
}

test("the example page keeps a conversation across a reload, behind the passphrase", async () => {
  const page = await suite.context.newPage();
  await page.goto(suite.server.url.replace("/test/page.html", "/example/index.html"));
  await unlock(page, "example passphrase");
  await page.getByLabel("Title", { exact: true }).fill("Trip ideas");
  await page.getByRole("button", { name: "Create conversation" }).click();
  await page.getByLabel("Message", { exact: true }).fill("Where to in May?");
  await page.getByRole("button", { name: "Send" }).click();
  const messages = page.getByRole("list", { name: "Messages" });
  await messages.getByText("Where to in May?").waitFor();

  await page.reload();
  await unlock(page, "not the passphrase");
  await page.getByRole("alert").getByText("Wrong passphrase.").waitFor();
  await unlock(page, "example passphrase");
  await messages.getByText("Where to in May?").waitFor();
  const conversations = await page.getByRole("list", { name: "Conversations" }).innerText();
  assert.match(conversations, /Trip ideas/);
  // The counts follow the unlock: wait for them rather than race them.
  await page.getByRole("status").getByText(/1 conversations, 1 messages/).waitFor();
  await page.close();
});

#!/usr/bin/env node
// A `sluicegate run` exec worker in Node: the same protocol as echo.py. Answers may come back
// in any order; this one answers each request once its (pretend) work is done.
//
// Use it as examples/workers/echo.yaml does echo.py: `command: [node, examples/workers/echo.js]`.
const readline = require("readline");

readline.createInterface({ input: process.stdin }).on("line", async (line) => {
  const request = JSON.parse(line);
  console.error(`${request.topic}/${request.partition}/${request.offset}: ${request.value}`);
  await new Promise((done) => setTimeout(done, 10)); // the work, several requests at once
  process.stdout.write(JSON.stringify({ id: request.id, result: "ok" }) + "\n");
});

// Validates xAPI statements with Learning Locker's xapi-validation (the
// validator its LRS uses): reads a JSON array of statements on stdin, prints
// a JSON array with, per statement, its list of problems (empty: valid).
// Exit status 0 either way; tests/test_xapi.py reads the answer.
"use strict";
const validate = require("xapi-validation").default;

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const statements = JSON.parse(input);
  const problems = statements.map((statement) =>
    validate(statement).map((warning) => `${(warning.path || []).join(".")}: ${warning.message || warning.constructor.name}`),
  );
  process.stdout.write(JSON.stringify(problems));
});

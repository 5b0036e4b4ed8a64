// Split a command line the way a POSIX shell would for simple cases: blanks separate
// arguments; 'single quotes' keep everything literally; "double quotes" keep blanks and let
// a backslash escape " \ $ and `; outside quotes a backslash escapes the next character.
// No variables, globs or pipes: the job's program receives exactly these arguments.

export class SplitError extends Error {}

export function split(line) {
  const args = [];
  let current = "";
  let inWord = false;
  let i = 0;
  while (i < line.length) {
    const c = line[i];
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new SplitError("the command has an unterminated ' quote");
      current += line.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      i += 1;
      let closed = false;
      while (i < line.length) {
        const d = line[i];
        if (d === '"') {
          closed = true;
          i += 1;
          break;
        }
        if (d === "\\" && i + 1 < line.length && '"\\$`\n'.includes(line[i + 1])) {
          if (line[i + 1] !== "\n") current += line[i + 1];
          i += 2;
        } else {
          current += d;
          i += 1;
        }
      }
      if (!closed) throw new SplitError('the command has an unterminated " quote');
      inWord = true;
    } else if (c === "\\") {
      if (i + 1 >= line.length) throw new SplitError("the command ends with a lone backslash");
      if (line[i + 1] !== "\n") {
        current += line[i + 1];
        inWord = true;
      }
      i += 2;
    } else if (/\s/.test(c)) {
      if (inWord) args.push(current);
      current = "";
      inWord = false;
      i += 1;
    } else {
      current += c;
      inWord = true;
      i += 1;
    }
  }
  if (inWord) args.push(current);
  return args;
}

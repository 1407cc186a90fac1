/**
 * Password rules, checked in the page because the server never sees the password.
 *
 * A password is refused when it is shorter than 10 characters, on the shipped list of common
 * passwords (NIST SP 800-63B 5.1.1.2: compare against commonly used and compromised values),
 * or very easy to guess by zxcvbn-ts (static/vendor/zxcvbn: fewer than about a million guesses,
 * as "aaaaaaaaaaaa", "qwertyuiop12" or "sunshine2024" are), which models what guessers try:
 * dictionaries, l33t, repeats, sequences, keyboard runs, dates and the username. The strength
 * hint is zxcvbn's score in words, with one line of advice.
 */

export const MIN_LENGTH = 10;
const LIST_URL = "/static/data/common-passwords.txt";
const ESTIMATOR_URLS = [
  "/static/vendor/zxcvbn/core.js",
  "/static/vendor/zxcvbn/language-common.js",
];
// zxcvbn's scores 0 and 1: under 10^6 guesses, minutes for whoever holds a stolen database.
const MIN_SCORE = 2;

let listPromise = null;
let estimator = null;

/** A classic script of this origin, added to the page; resolves once it has run. */
function addScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`${src} could not be loaded`));
    document.head.append(script);
  });
}

/** zxcvbn-ts with its common dictionaries and keyboard graphs. */
async function loadEstimator() {
  await Promise.all(ESTIMATOR_URLS.map(addScript));
  const { core, "language-common": common } = window.zxcvbnts;
  return new core.ZxcvbnFactory({
    dictionary: { ...common.dictionary },
    graphs: common.adjacencyGraphs,
  });
}

/**
 * The common-password list as a Set of lower-case entries, fetched once per page, with the
 * strength estimator: the promise settles when both are here (the rules need both).
 */
export function loadCommonPasswords() {
  listPromise ??= Promise.all([
    fetch(LIST_URL, { credentials: "same-origin" }).then(async (response) => {
      if (!response.ok) throw new Error(`the password list answered ${response.status}`);
      const lines = (await response.text()).split("\n");
      return new Set(
        lines.filter((line) => line && !line.startsWith("# ")).map((line) => line.trim()),
      );
    }),
    loadEstimator().then((loaded) => {
      estimator = loaded;
    }),
  ]).then(([list]) => list);
  return listPromise;
}

/** zxcvbn's verdict on password ({score, sequence}), or null before the estimator is here. */
function estimate(password, username) {
  return estimator?.check(password, username ? [username] : []) ?? null;
}

/** Why zxcvbn finds password easy to guess, from the patterns it matched. */
function guessedBecause(result) {
  const patterns = new Set(result.sequence.map((match) => match.pattern));
  const dictionaries = new Set(result.sequence.map((match) => match.dictionaryName));
  if (dictionaries.has("userInputs")) return "It contains your username.";
  if (patterns.has("repeat")) return "Repeated characters or words are easy to guess.";
  if (patterns.has("sequence") || patterns.has("spatial"))
    return "Runs like abcd, 1234 or qwerty are easy to guess.";
  if (patterns.has("date") || patterns.has("regex")) return "Years and dates are easy to guess.";
  if (patterns.has("dictionary")) return "It is built from common words or passwords.";
  return "";
}

/** The form a password is compared in: NFKC (as key derivation sees it), lower-case. */
function folded(password) {
  return password.normalize("NFKC").toLowerCase();
}

/** Length in characters as a person counts them (code points), after NFKC. */
function length(password) {
  return [...password.normalize("NFKC")].length;
}

/** Why password is refused, as a sentence to show, or null when it is acceptable. */
export function passwordProblem(password, { common, username = "" }) {
  if (length(password) < MIN_LENGTH) return `Use at least ${MIN_LENGTH} characters.`;
  const lower = folded(password);
  if (common.has(lower))
    return "This is one of the most common passwords. Choose one that nobody else uses.";
  if (username && lower === username) return "Don't use your username as your password.";
  const result = estimate(password, username);
  if (result && result.score < MIN_SCORE) {
    const why = guessedBecause(result);
    return `This password is too easy to guess.${why ? ` ${why}` : ""} A few random words make a strong one.`;
  }
  return null;
}

/** Size of the alphabet the characters of password seem drawn from. */
function alphabetSize(password) {
  let size = 0;
  if (/[a-z]/.test(password)) size += 26;
  if (/[A-Z]/.test(password)) size += 26;
  if (/[0-9]/.test(password)) size += 10;
  if (/[!-/:-@[-`{-~ ]/.test(password)) size += 33;
  if (/\P{ASCII}/u.test(password)) size += 100;
  return Math.max(size, 1);
}

/** Characters that add little: repeats ("aaa") and runs ("abcd", "4321", "qwer"). */
function predictableCount(password) {
  const rows = ["abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm"];
  const lower = password.toLowerCase();
  let count = 0;
  for (let i = 2; i < lower.length; i += 1) {
    const three = lower.slice(i - 2, i + 1);
    const repeat = three[0] === three[1] && three[1] === three[2];
    const run = rows.some(
      (row) => row.includes(three) || [...row].reverse().join("").includes(three),
    );
    if (repeat || run) count += 1;
  }
  return count;
}

/** The longest entry of common within lower ("" if none of 4+ chars); looks at 64 chars at most. */
function commonCore(password, common) {
  const lower = password.slice(0, 64);
  for (let size = lower.length; size >= 4; size -= 1) {
    for (let start = 0; start + size <= lower.length; start += 1) {
      const piece = lower.slice(start, start + size);
      if (common.has(piece)) return piece;
    }
  }
  return "";
}

const LABELS = ["Very weak", "Weak", "Fair", "Strong", "Very strong"];

/**
 * A strength estimate: {score: 0..4, label, advice}: zxcvbn's score once the estimator is
 * loaded. Until then, a rough one: each character is worth log2 of the alphabet it comes from,
 * except those that a guesser gets for free: a common password inside it (worth ~15 bits, its
 * rank in a 30,000-word list), runs, repeats, and the username.
 */
export function passwordStrength(password, { common = new Set(), username = "" } = {}) {
  const result = estimate(password, username);
  if (result) {
    const core = commonCore(folded(password), common);
    return {
      score: result.score,
      label: LABELS[result.score],
      advice: advice(password, result.score, core),
    };
  }
  const lower = folded(password);
  const perChar = Math.log2(alphabetSize(password));
  let free = predictableCount(password);
  let bonus = 0;
  const core = commonCore(lower, common);
  if (core) {
    free += core.length;
    bonus += 15;
  }
  if (username.length >= 3 && lower.includes(username)) free += username.length;
  const bits = Math.max(0, length(password) - free) * perChar + bonus;
  const score = bits < 30 ? 0 : bits < 45 ? 1 : bits < 60 ? 2 : bits < 80 ? 3 : 4;
  return { score, label: LABELS[score], advice: advice(password, score, core) };
}

/** One line of advice to go with the score. */
function advice(password, score, core) {
  if (length(password) < MIN_LENGTH) return `Use at least ${MIN_LENGTH} characters.`;
  // The common part is not echoed: the page never shows any piece of the password.
  if (core && score < 3) return "It contains a common password, which guessers try first.";
  if (score < 3) return "Add more words or characters. A few random words make a strong password.";
  return "Good. Remember it: there is no password reset.";
}

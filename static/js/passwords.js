/**
 * Password rules, checked in the page because the server never sees the password.
 *
 * A password is refused when it is shorter than 10 characters or on the shipped list of common
 * passwords (NIST SP 800-63B 5.1.1.2: compare against commonly used and compromised values).
 * The strength hint is advice, not a rule: a rough guessing-entropy estimate that penalises
 * the patterns guessers try first (a common password with digits added, runs, repeats, the
 * username).
 */

export const MIN_LENGTH = 10;
const LIST_URL = "/static/data/common-passwords.txt";

let listPromise = null;

/** The common-password list as a Set of lower-case entries, fetched once per page. */
export function loadCommonPasswords() {
  listPromise ??= fetch(LIST_URL, { credentials: "same-origin" }).then(async (response) => {
    if (!response.ok) throw new Error(`the password list answered ${response.status}`);
    const lines = (await response.text()).split("\n");
    return new Set(
      lines.filter((line) => line && !line.startsWith("# ")).map((line) => line.trim()),
    );
  });
  return listPromise;
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
 * A strength estimate: {score: 0..4, label, advice}. Each character is worth log2 of the
 * alphabet it comes from, except those that a guesser gets for free: a common password inside
 * it (worth ~15 bits, its rank in a 30,000-word list), runs, repeats, and the username.
 */
export function passwordStrength(password, { common = new Set(), username = "" } = {}) {
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

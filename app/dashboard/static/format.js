// Referral ops dashboard, 2/5: the API's numbers and dates as text.
//
// Money and rates are formatted from the API's decimal strings, digit by digit, never recomputed
// through floats (floats only place things on charts).
"use strict";

(() => {
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // ---------- exact formatting of the API's numbers ----------

  function groupDigits(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // "12345.60" -> "12,345.60"; the digits are the API's, only separators are added.
  function formatDecimal(text) {
    if (text === null || text === undefined) return "—";
    const raw = String(text);
    const negative = raw.startsWith("-");
    const [whole, fraction] = (negative ? raw.slice(1) : raw).split(".");
    return (negative ? "-" : "") + groupDigits(whole) + (fraction !== undefined ? "." + fraction : "");
  }

  function formatCount(value) {
    return value === null || value === undefined ? "—" : groupDigits(String(value));
  }

  const symbols = new Map();
  function currencyAffixes(currency) {
    if (!symbols.has(currency)) {
      let prefix = currency + " ";
      let suffix = "";
      try {
        const parts = new Intl.NumberFormat("en-US", {
          style: "currency",
          currency,
          currencyDisplay: "narrowSymbol",
        }).formatToParts(1);
        const index = parts.findIndex((part) => part.type === "currency");
        const symbol = parts[index].value;
        const before = index < parts.findIndex((part) => part.type === "integer");
        prefix = before ? symbol : "";
        suffix = before ? "" : " " + symbol;
      } catch (error) {
        // An unknown code keeps its ISO letters.
      }
      symbols.set(currency, [prefix, suffix]);
    }
    return symbols.get(currency);
  }

  function formatMoney(text, currency) {
    if (text === null || text === undefined) return "—";
    const [prefix, suffix] = currencyAffixes(currency);
    const grouped = formatDecimal(text);
    const negative = grouped.startsWith("-");
    return (negative ? "-" : "") + prefix + (negative ? grouped.slice(1) : grouped) + suffix;
  }

  // A decimal string times 10^places, exactly, as a string.
  function shiftDecimal(text, places) {
    const raw = String(text);
    const negative = raw.startsWith("-");
    const [whole, fraction = ""] = (negative ? raw.slice(1) : raw).split(".");
    const padded = fraction.padEnd(places, "0");
    const integer = (whole + padded.slice(0, places)).replace(/^0+(?=\d)/, "");
    const rest = padded.slice(places);
    return (negative ? "-" : "") + integer + (rest ? "." + rest : "");
  }

  // A rate "0.1234" (a fraction) as "12.34%".
  function formatRate(text) {
    if (text === null || text === undefined) return "—";
    return shiftDecimal(text, 2) + "%";
  }

  // A decimal string rounded half-even to `places`, exactly (digits, not floats).
  function roundDecimal(text, places) {
    const raw = String(text);
    const negative = raw.startsWith("-");
    const [whole, fraction = ""] = (negative ? raw.slice(1) : raw).split(".");
    const kept = fraction.slice(0, places).padEnd(places, "0");
    const rest = fraction.slice(places);
    let digits = BigInt(whole + kept);
    const odd = digits % 2n === 1n;
    if (rest[0] > "5" || (rest[0] === "5" && (/[1-9]/.test(rest.slice(1)) || odd))) digits += 1n;
    const padded = digits.toString().padStart(places + 1, "0");
    const body = places ? `${padded.slice(0, -places)}.${padded.slice(-places)}` : padded;
    return (negative && digits !== 0n ? "-" : "") + body;
  }

  // A ratio (the API's 4 places) to 2 places: "3.6209" -> "3.62×".
  function formatRatio(text) {
    return text === null || text === undefined ? "—" : formatDecimal(roundDecimal(text, 2)) + "×";
  }

  function isZero(text) {
    return /^-?0*(\.0*)?$/.test(String(text));
  }

  // Axis ticks are positions on a scale, not API numbers: compact is fine there.
  function compactMoney(value, currency) {
    const [prefix, suffix] = currencyAffixes(currency);
    let body;
    if (Math.abs(value) >= 1e6) body = trim(value / 1e6) + "M";
    else if (Math.abs(value) >= 1e3) body = trim(value / 1e3) + "k";
    else body = trim(value);
    return prefix + body + suffix;
  }

  function trim(value) {
    return String(Number(value.toFixed(1)));
  }

  // ---------- dates ----------

  function pad(number) {
    return String(number).padStart(2, "0");
  }

  function isoDate(date) {
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  }

  function parseDate(text) {
    const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || "");
    if (!match) return null;
    const date = new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3]));
    return isoDate(date) === text ? date : null;
  }

  function addDays(text, days) {
    const date = parseDate(text);
    date.setDate(date.getDate() + days);
    return isoDate(date);
  }

  function daysBetween(fromText, toText) {
    const from = parseDate(fromText);
    const to = parseDate(toText);
    return Math.round((Date.UTC(to.getFullYear(), to.getMonth(), to.getDate()) -
      Date.UTC(from.getFullYear(), from.getMonth(), from.getDate())) / 86400000);
  }

  function humanDate(text, withYear) {
    const [year, month, day] = text.split("-").map(Number);
    if (day === undefined) return `${MONTHS[month - 1]} ${year}`;
    return `${MONTHS[month - 1]} ${day}${withYear ? ", " + year : ""}`;
  }

  function humanDateTime(iso) {
    const date = new Date(iso);
    return `${MONTHS[date.getMonth()]} ${date.getDate()}, ${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }

  // The local days a clipped bucket covers: "Sep 5 – Sep 7" (its end is exclusive).
  function coveredDays(bucket) {
    const first = new Date(bucket.start);
    const last = new Date(Date.parse(bucket.end) - 1);
    const day = (date) => humanDate(isoDate(date), false);
    return isoDate(first) === isoDate(last) ? day(first) : `${day(first)} – ${day(last)}`;
  }

  function intervalFor(days) {
    if (days <= 62) return "day";
    if (days <= 200) return "week";
    return "month";
  }

  Object.assign(window.ReferralDashboard, { formatDecimal, formatCount, formatMoney, formatRate, formatRatio, roundDecimal, isZero, compactMoney, isoDate, parseDate, addDays, daysBetween, humanDate, humanDateTime, coveredDays, intervalFor });
})();

// Referral ops dashboard: reads the JSON API with the key the user enters.
//
// The key lives in this tab's sessionStorage only and leaves the page only in the
// Authorization header of same-origin fetch calls. Every number shown is the API's own:
// money and rates are formatted from the API's decimal strings, never recomputed through
// floats (floats only place things on charts). The DOM is built with textContent and
// attributes, never innerHTML, so nothing from the data is parsed as markup.
"use strict";

(() => {
  const KEY_STORAGE = "referral-dashboard.key";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const RECENT_ROWS = 10;
  const MAX_PAGES = 10;
  const PAGE_LIMIT = 200;
  const MAX_RANGE_DAYS = 400;
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const REASONS = {
    explicit_code: "Code at checkout",
    explicit_click: "Click on the order",
    last_touch: "Last touch",
    first_touch: "First touch",
    self_referral: "Self-referral",
    outside_window: "Outside the window",
    no_eligible_touch: "No eligible touch",
    organic: "Organic",
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    key: null,
    programs: [],
    program: null,
    from: null, // "YYYY-MM-DD", first day shown (local)
    to: null, // "YYYY-MM-DD", last day shown (local, included)
    order: "conversions",
    tz: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
    seq: 0,
    last: null,
  };

  // ---------- small DOM helpers ----------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    append(node, children);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
  }

  function append(node, children) {
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

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

  function formatRatio(text) {
    return text === null || text === undefined ? "—" : formatDecimal(text) + "×";
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

  // The range sent to the API: [local midnight of `from`, local midnight after `to`).
  function rangeInstants() {
    return {
      from: parseDate(state.from).toISOString(),
      to: parseDate(addDays(state.to, 1)).toISOString(),
    };
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

  function intervalFor(days) {
    if (days <= 62) return "day";
    if (days <= 200) return "week";
    return "month";
  }

  // ---------- the API ----------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  function apiUrl(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined) url.searchParams.set(name, value);
    }
    return url;
  }

  async function request(url) {
    // Same origin only: the key never goes anywhere else.
    if (url.origin !== window.location.origin) throw new Error("refusing another origin");
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${state.key}` },
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
      referrerPolicy: "no-referrer",
    });
    if (!response.ok) {
      let problem = null;
      try {
        problem = await response.json();
      } catch (error) {
        problem = null;
      }
      throw new ApiError(response.status, problem);
    }
    return response;
  }

  async function api(path, params) {
    return (await request(apiUrl(path, params))).json();
  }

  // ---------- key gate ----------

  function showGate(message) {
    $("board").hidden = true;
    $("controls").hidden = true;
    $("gate").hidden = false;
    const error = $("gate-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("key").value = "";
    $("key").focus();
  }

  function forgetKey(message) {
    state.key = null;
    state.seq += 1;
    sessionStorage.removeItem(KEY_STORAGE);
    showGate(message);
  }

  function keyProblem(error) {
    if (error instanceof ApiError && error.status === 401) {
      return "This key is unknown or revoked.";
    }
    if (error instanceof ApiError && error.status === 403) {
      return "This key cannot read metrics: use a secret or admin key.";
    }
    if (error instanceof ApiError && error.status === 429) {
      return "Too many attempts; wait a minute and try again.";
    }
    return null;
  }

  async function openWithKey(key) {
    state.key = key;
    const programs = [];
    let cursor = null;
    do {
      const page = await api("/v1/programs", { limit: PAGE_LIMIT, cursor });
      programs.push(...page.data);
      cursor = page.next_cursor;
    } while (cursor && programs.length < PAGE_LIMIT * MAX_PAGES);
    state.programs = programs;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("gate").hidden = true;
    $("controls").hidden = false;
    $("board").hidden = false;
    fillProgramSelect();
    if (!programs.length) {
      showEmpty();
      return;
    }
    await refresh();
  }

  // ---------- view state (kept in the URL fragment, never sent to the server) ----------

  function readHash() {
    const params = new URLSearchParams(window.location.hash.slice(1));
    const from = params.get("from");
    const to = params.get("to");
    if (parseDate(from) && parseDate(to) && from <= to) {
      state.from = from;
      state.to = to;
    } else {
      setPreset(30);
    }
    if (["conversions", "revenue", "referrals", "clicks"].includes(params.get("order"))) {
      state.order = params.get("order");
    }
    state.wantedProgram = params.get("program");
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.program) params.set("program", state.program.id);
    params.set("from", state.from);
    params.set("to", state.to);
    params.set("order", state.order);
    history.replaceState(null, "", "#" + params.toString());
  }

  function setPreset(days) {
    state.to = isoDate(new Date());
    state.from = addDays(state.to, -(days - 1));
  }

  function fillProgramSelect() {
    const select = $("program");
    select.replaceChildren(
      ...state.programs.map((program) =>
        el("option", {
          value: program.id,
          text: program.status === "active" ? program.name : `${program.name} (${program.status})`,
        }),
      ),
    );
    const wanted = state.programs.find((program) => program.id === state.wantedProgram);
    state.program = wanted || state.programs[0] || null;
    if (state.program) select.value = state.program.id;
  }

  function syncControls() {
    $("from").value = state.from;
    $("to").value = state.to;
    $("order").value = state.order;
    const today = isoDate(new Date());
    for (const button of $("presets").querySelectorAll("button")) {
      const days = Number(button.dataset.days);
      const pressed = state.to === today && daysBetween(state.from, state.to) === days - 1;
      button.setAttribute("aria-pressed", pressed ? "true" : "false");
    }
  }

  // ---------- loading ----------

  function showEmpty() {
    $("program-name").textContent = "No programs yet";
    $("program-meta").replaceChildren(
      "Create one with POST /v1/programs, or run ",
      el("code", { text: "referral-service demo" }),
      ".",
    );
    $("board").dataset.state = "empty";
  }

  async function refresh() {
    if (!state.program) return;
    const days = daysBetween(state.from, state.to) + 1;
    syncControls();
    writeHash();
    const banner = $("banner");
    if (days < 1 || days > MAX_RANGE_DAYS) {
      banner.textContent = `Pick a range of 1 to ${MAX_RANGE_DAYS} days.`;
      banner.hidden = false;
      return;
    }
    banner.hidden = true;
    const seq = ++state.seq;
    const board = $("board");
    const range = rangeInstants();
    const interval = intervalFor(days);
    const program = state.program;
    board.dataset.state = "loading";
    board.dataset.program = program.id;
    board.dataset.from = range.from;
    board.dataset.to = range.to;
    board.dataset.interval = interval;
    board.dataset.tz = state.tz;
    board.dataset.order = state.order;
    renderHeader(program, interval);
    updateExportLinks(program, range, interval);
    const base = `/v1/programs/${program.id}/metrics`;
    try {
      const [summary, series, leaders, channels] = await Promise.all([
        api(`${base}/summary`, range),
        api(`${base}/timeseries`, { ...range, interval, tz: state.tz }),
        api(`${base}/referrers`, { ...range, order_by: state.order, limit: 10 }),
        api(`${base}/channels`, { ...range, limit: 10 }),
      ]);
      if (seq !== state.seq) return;
      state.last = { summary, series, leaders, channels };
      renderKpis(summary, series);
      renderCharts();
      renderFunnel(summary);
      renderReferrers(leaders);
      renderChannels(channels);
      board.dataset.state = "ready";
      $("footnote").textContent =
        `Times in ${state.tz}. Figures as of ${humanDateTime(new Date().toISOString())}; ` +
        "rates are rounded by the API to 4 places.";
    } catch (error) {
      if (seq === state.seq) failed(error);
      return;
    }
    await loadRecent(seq, program, range, referrerNames());
  }

  function referrerNames() {
    const names = new Map();
    for (const row of (state.last && state.last.leaders.data) || []) {
      names.set(row.referrer_id, row.name || row.external_id);
    }
    return names;
  }

  function failed(error) {
    const problem = keyProblem(error);
    if (problem && error.status === 401) {
      forgetKey(problem);
      return;
    }
    $("board").dataset.state = "error";
    const banner = $("banner");
    banner.textContent = problem || `Could not load the metrics: ${error.message}`;
    banner.hidden = false;
  }

  // The latest orders of the range: the API lists oldest first, so look at a short window
  // before the end of the range first and widen it until there are enough.
  async function loadRecent(seq, program, range, names) {
    const table = $("recent");
    table.dataset.state = "loading";
    try {
      let rows = [];
      const end = new Date(range.to);
      for (const days of [2, 14, 60, null]) {
        const start = days === null ? range.from : new Date(end - days * 86400000).toISOString();
        const from = start < range.from ? range.from : start;
        rows = await conversionsBetween(program.id, from, range.to);
        if (rows.length >= RECENT_ROWS || from === range.from) break;
      }
      rows.sort((a, b) => Date.parse(b.occurred_at) - Date.parse(a.occurred_at));
      rows = rows.slice(0, RECENT_ROWS);
      const explained = await Promise.all(
        rows.map((row) => api(`/v1/conversions/${row.id}/attribution`)),
      );
      if (seq !== state.seq) return;
      renderRecent(rows, explained, names, program.currency);
      table.dataset.state = "ready";
    } catch (error) {
      if (seq === state.seq) failed(error);
    }
  }

  async function conversionsBetween(programId, from, to) {
    const rows = [];
    let cursor = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const answer = await api("/v1/conversions", {
        program_id: programId,
        from,
        to,
        limit: PAGE_LIMIT,
        cursor,
      });
      rows.push(...answer.data);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    return rows;
  }

  // ---------- rendering ----------

  function renderHeader(program, interval) {
    $("program-name").textContent = program.name;
    $("program-meta").replaceChildren(
      el("span", { class: `pill ${program.status}`, text: program.status }),
      el("span", { text: program.currency }),
      el("span", { text: "·" }),
      el("span", {
        text: `${program.attribution_model.replace("_", " ")}, ${program.attribution_window_days}-day window`,
      }),
    );
    const sameYear = state.from.slice(0, 4) === state.to.slice(0, 4);
    $("range-label").textContent =
      `${humanDate(state.from, !sameYear)} – ${humanDate(state.to, true)}`;
    for (const node of document.querySelectorAll(".interval-name")) {
      node.textContent = `per ${interval}`;
    }
  }

  function kpi(metric, label, valueText, rawValue, sub, sparkValues) {
    return el(
      "div",
      { class: "kpi", "data-kpi": metric },
      el("span", { class: "kpi-label", text: label }),
      el("span", {
        class: "kpi-value",
        "data-metric": metric,
        "data-value": rawValue,
        title: valueText,
        text: valueText,
      }),
      el("span", { class: "kpi-sub" }, sub),
      sparkline(sparkValues),
    );
  }

  function metricSpan(metric, raw, text) {
    return el("strong", { "data-metric": metric, "data-value": raw ?? "", text });
  }

  function renderKpis(summary, series) {
    const currency = summary.currency;
    const column = (name) => series.buckets.map((bucket) => Number(bucket[name]));
    const costSub =
      summary.reward_points > 0
        ? [metricSpan("reward_points", summary.reward_points, formatCount(summary.reward_points)), " points too"]
        : [metricSpan("revenue_per_reward_spent", summary.revenue_per_reward_spent, formatRatio(summary.revenue_per_reward_spent)), " revenue per reward"];
    $("kpis").replaceChildren(
      kpi("clicks", "Clicks", formatCount(summary.clicks), summary.clicks, [
        metricSpan("unique_clicks", summary.unique_clicks, formatCount(summary.unique_clicks)),
        " unique",
      ], column("clicks")),
      kpi("referrals", "Referrals", formatCount(summary.referrals), summary.referrals, [
        metricSpan("referral_rate", summary.referral_rate, formatRate(summary.referral_rate)),
        " of unique clicks",
      ], column("referrals")),
      kpi("conversions", "Conversions", formatCount(summary.conversions), summary.conversions, [
        metricSpan("conversion_rate", summary.conversion_rate, formatRate(summary.conversion_rate)),
        " conversion rate",
      ], column("conversions")),
      kpi("revenue", "Revenue", formatMoney(summary.revenue, currency), summary.revenue, [
        metricSpan("average_order_value", summary.average_order_value, formatMoney(summary.average_order_value, currency)),
        " average order",
      ], column("revenue")),
      kpi("reward_cost", "Reward cost", formatMoney(summary.reward_cost, currency), summary.reward_cost, costSub, column("reward_cost")),
    );
    $("rate-total").replaceChildren(
      el("span", { "data-metric": "conversion_rate", "data-value": summary.conversion_rate ?? "", text: formatRate(summary.conversion_rate) }),
      el("small", { text: "over the range" }),
    );
    $("revenue-total").replaceChildren(
      el("span", { "data-metric": "revenue", "data-value": summary.revenue, text: formatMoney(summary.revenue, currency) }),
      el("small", { text: `${formatMoney(summary.reward_cost, currency)} in rewards` }),
    );
  }

  function sparkline(values) {
    const width = 200;
    const height = 34;
    const node = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", "aria-hidden": "true" });
    if (values.length < 2) return node;
    const max = Math.max(...values, 0) || 1;
    const points = values.map((value, index) => [
      (index / (values.length - 1)) * width,
      height - 2 - (Math.max(value, 0) / max) * (height - 4),
    ]);
    const line = points.map(([x, y], index) => `${index ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
    node.append(
      svg("path", { class: "spark-area", d: `${line}L${width},${height}L0,${height}Z` }),
      svg("path", { class: "spark-line", d: line, "vector-effect": "non-scaling-stroke" }),
    );
    return node;
  }

  function renderFunnel(summary) {
    const steps = [
      ["clicks", "Clicks", summary.clicks, null],
      ["unique_clicks", "Unique clicks", summary.unique_clicks, null],
      ["referrals", "Referrals", summary.referrals, ["referral_rate", "referral rate", summary.referral_rate]],
      ["converted_referrals", "Referrals who bought", summary.converted_referrals, ["referral_purchase_rate", "referral purchase rate", summary.referral_purchase_rate]],
      ["conversions", "Conversions", summary.conversions, ["conversion_rate", "conversion rate (of unique clicks)", summary.conversion_rate]],
    ];
    const top = Math.max(summary.clicks, 1);
    const nodes = [];
    steps.forEach(([metric, label, value, rate], index) => {
      if (rate) {
        nodes.push(
          el("div", { class: "funnel-rate" },
            el("strong", { "data-metric": rate[0], "data-value": rate[2] ?? "", text: formatRate(rate[2]) }),
            " ", rate[1]),
        );
      }
      const bar = el("span");
      bar.style.width = `${(100 * value) / top}%`;
      nodes.push(
        el("div", { class: `funnel-step${index === steps.length - 1 ? " last" : ""}`, "data-step": metric },
          el("span", { class: "funnel-name", text: label }),
          el("span", { class: "funnel-count", "data-metric": metric, "data-value": value, text: formatCount(value) }),
          el("div", { class: "funnel-bar" }, bar)),
      );
    });
    const currency = summary.currency;
    nodes.push(
      el("div", { class: "funnel-foot" },
        el("div", {}, "Revenue", el("strong", { "data-metric": "revenue", "data-value": summary.revenue, text: formatMoney(summary.revenue, currency) })),
        el("div", {}, "Reward cost", el("strong", { "data-metric": "reward_cost", "data-value": summary.reward_cost, text: formatMoney(summary.reward_cost, currency) })),
        el("div", {}, "Average order", el("strong", { "data-metric": "average_order_value", "data-value": summary.average_order_value ?? "", text: formatMoney(summary.average_order_value, currency) })),
        el("div", {}, "Revenue per reward spent", el("strong", { "data-metric": "revenue_per_reward_spent", "data-value": summary.revenue_per_reward_spent ?? "", text: formatRatio(summary.revenue_per_reward_spent) })),
      ),
    );
    $("funnel").replaceChildren(...nodes);
  }

  function headRow(columns) {
    return el("thead", {}, el("tr", {}, columns.map(([label, numeric]) => el("th", { class: numeric ? "n" : null, scope: "col", text: label }))));
  }

  function cell(column, raw, text, extra) {
    return el("td", { class: extra === "text" ? null : "n", "data-col": column, "data-value": raw ?? "", text });
  }

  function emptyBody(span, message) {
    return el("tbody", {}, el("tr", { class: "empty-row" }, el("td", { colspan: span, text: message })));
  }

  function renderReferrers(board) {
    const currency = board.currency;
    const columns = [["#", false], ["Referrer", false], ["Clicks", true], ["Unique", true], ["Referrals", true], ["Conv.", true], ["Revenue", true], ["Conv. rate", true]];
    const table = $("referrers");
    if (!board.data.length) {
      table.replaceChildren(headRow(columns), emptyBody(columns.length, "No referrer activity in this range."));
      return;
    }
    const measure = (row) => Number(row[board.order_by]);
    const best = Math.max(...board.data.map(measure), 1e-9);
    const body = el("tbody");
    board.data.forEach((row, index) => {
      const share = el("span");
      share.style.width = `${Math.max(0, (100 * measure(row)) / best)}%`;
      body.append(
        el("tr", { "data-referrer": row.referrer_id },
          el("td", { class: "rank", text: index + 1 }),
          el("td", { "data-col": "referrer", "data-value": row.external_id },
            el("span", { class: "who", text: row.name || row.external_id }),
            el("span", { class: "who-sub", text: row.external_id }),
            el("span", { class: "share", "aria-hidden": "true" }, share)),
          cell("clicks", row.clicks, formatCount(row.clicks)),
          cell("unique_clicks", row.unique_clicks, formatCount(row.unique_clicks)),
          cell("referrals", row.referrals, formatCount(row.referrals)),
          cell("conversions", row.conversions, formatCount(row.conversions)),
          cell("revenue", row.revenue, formatMoney(row.revenue, currency)),
          cell("conversion_rate", row.conversion_rate, formatRate(row.conversion_rate)),
        ),
      );
    });
    table.replaceChildren(headRow(columns), body);
  }

  function renderChannels(channels) {
    const currency = channels.currency;
    const columns = [["Channel", false], ["Clicks", true], ["Unique", true], ["Referrals", true], ["Conv.", true], ["Revenue", true], ["Conv. rate", true]];
    const table = $("channels");
    if (!channels.data.length) {
      table.replaceChildren(headRow(columns), emptyBody(columns.length, "No channel activity in this range."));
      return;
    }
    const body = el("tbody");
    const most = Math.max(...channels.data.map((row) => row.clicks), 1);
    for (const row of channels.data) {
      const direct = row.utm_source === "direct" && row.utm_medium === "direct";
      const share = el("span");
      share.style.width = `${(100 * row.clicks) / most}%`;
      body.append(
        el("tr", {},
          el("td", { "data-col": "channel", "data-value": `${row.utm_source}/${row.utm_medium}/${row.utm_campaign}` },
            el("span", { class: "who", text: direct ? "Direct" : `${row.utm_source} / ${row.utm_medium}` }),
            el("span", { class: "who-sub", text: direct ? "no utm tags" : row.utm_campaign }),
            el("span", { class: "share teal", "aria-hidden": "true" }, share)),
          cell("clicks", row.clicks, formatCount(row.clicks)),
          cell("unique_clicks", row.unique_clicks, formatCount(row.unique_clicks)),
          cell("referrals", row.referrals, formatCount(row.referrals)),
          cell("conversions", row.conversions, formatCount(row.conversions)),
          cell("revenue", row.revenue, formatMoney(row.revenue, currency)),
          cell("conversion_rate", row.conversion_rate, formatRate(row.conversion_rate)),
        ),
      );
    }
    table.replaceChildren(headRow(columns), body);
  }

  function renderRecent(rows, explained, names, currency) {
    const columns = [["When", false], ["Customer", false], ["Amount", true], ["Status", false], ["Attribution", false]];
    const table = $("recent");
    if (!rows.length) {
      table.replaceChildren(headRow(columns), emptyBody(columns.length, "No conversions in this range."));
      return;
    }
    const body = el("tbody");
    rows.forEach((row, index) => {
      const attribution = explained[index];
      const winner = attribution.winner;
      const reason = attribution.reason;
      const rowCurrency = row.currency || currency;
      const amount = el("td", { class: "n", "data-col": "amount", "data-value": row.amount },
        formatMoney(row.amount, rowCurrency));
      if (!isZero(row.refunded_amount)) {
        amount.append(el("span", { class: "refunded", text: `${formatMoney(row.refunded_amount, rowCurrency)} refunded` }));
      }
      const candidates = attribution.candidates.length;
      const who = winner && winner.referrer_id ? names.get(winner.referrer_id) : null;
      const winnerText = winner
        ? [el("span", { class: "mono", text: winner.code || "—" }), ` · ${winner.kind}`]
        : [`no winner · ${candidates} candidate${candidates === 1 ? "" : "s"}`];
      const explanation = el("td", { "data-col": "attribution" },
        el("span", { class: winner ? "who" : "who muted", "data-col": "winner", "data-value": winner ? winner.code || "" : "" }, winnerText),
        el("span", { class: "who-sub" },
          el("span", { "data-col": "reason", "data-value": reason, title: reason, text: REASONS[reason] || reason }),
          who ? ` · ${who}` : ""),
      );
      body.append(
        el("tr", { "data-conversion": row.id },
          el("td", { "data-col": "occurred_at", "data-value": row.occurred_at, text: humanDateTime(row.occurred_at) }),
          el("td", { "data-col": "customer", text: row.customer_id }),
          amount,
          el("td", { "data-col": "status", "data-value": row.status },
            el("span", { class: `badge ${reason === "self_referral" ? "self" : row.status}`, text: reason === "self_referral" ? "self-referral" : row.status })),
          explanation,
        ),
      );
    });
    table.replaceChildren(headRow(columns), body);
  }

  // ---------- charts: SVG drawn here, no library ----------

  function niceStep(max, ticks) {
    const raw = max / ticks;
    const power = 10 ** Math.floor(Math.log10(raw));
    const unit = [1, 2, 2.5, 5, 10].find((step) => step * power >= raw) || 10;
    return unit * power;
  }

  function tickLabels(labels, width) {
    const room = Math.max(2, Math.floor(width / 74));
    const every = Math.max(1, Math.ceil(labels.length / room));
    return labels.map((_, index) => index % every === 0);
  }

  function drawChart(container, spec) {
    const width = Math.max(container.clientWidth, 260);
    const height = 230;
    const margin = { top: 10, right: 8, bottom: 26, left: 54 };
    const plotWidth = width - margin.left - margin.right;
    const plotHeight = height - margin.top - margin.bottom;
    const labels = spec.labels;
    const count = labels.length;
    const numbers = spec.series.flatMap((series) => series.values.filter((v) => v !== null).map(Number));
    const max = Math.max(...numbers, 0);
    const step = max > 0 ? niceStep(max, 4) : spec.emptyStep;
    const top = Math.max(step, Math.ceil(max / step) * step);
    const y = (value) => margin.top + plotHeight - (value / top) * plotHeight;
    const band = plotWidth / Math.max(count, 1);
    const x = (index) => margin.left + band * index + band / 2;
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, "data-chart": spec.name });

    for (let tick = 0; tick <= top + step / 2; tick += step) {
      root.append(
        svg("line", { class: "grid-line", x1: margin.left, x2: width - margin.right, y1: y(tick), y2: y(tick) }),
        svg("text", { class: "axis-label", x: margin.left - 8, y: y(tick) + 4, "text-anchor": "end", text: spec.tick(tick) }),
      );
    }
    const shown = tickLabels(labels, plotWidth);
    labels.forEach((label, index) => {
      if (shown[index]) {
        root.append(svg("text", { class: "axis-label", x: x(index), y: height - 6, "text-anchor": "middle", text: spec.xLabel(label) }));
      }
    });

    if (spec.type === "line") {
      const series = spec.series[0];
      let path = "";
      let area = "";
      let runStart = null;
      let previous = null;
      series.values.forEach((value, index) => {
        if (value === null) {
          if (runStart !== null) area += `L${x(previous).toFixed(1)},${y(0)}L${x(runStart).toFixed(1)},${y(0)}Z`;
          runStart = null;
          return;
        }
        const point = `${x(index).toFixed(1)},${y(Number(value)).toFixed(1)}`;
        if (runStart === null) {
          path += `M${point}`;
          area += `M${point}`;
          runStart = index;
        } else {
          path += `L${point}`;
          area += `L${point}`;
        }
        previous = index;
      });
      if (runStart !== null) area += `L${x(previous).toFixed(1)},${y(0)}L${x(runStart).toFixed(1)},${y(0)}Z`;
      root.append(svg("path", { class: "area", d: area }), svg("path", { class: "line", d: path }));
      series.values.forEach((value, index) => {
        if (value === null) return;
        root.append(
          svg("circle", {
            class: "dot",
            cx: x(index),
            cy: y(Number(value)),
            r: count > 45 ? 1.5 : 2.6,
            "data-series": series.key,
            "data-label": labels[index],
            "data-value": value,
          }),
        );
      });
    } else {
      const groups = spec.series.length;
      const inner = Math.max(1, Math.min(band * 0.72, 44));
      const barWidth = inner / groups;
      spec.series.forEach((series, seriesIndex) => {
        series.values.forEach((value, index) => {
          const number = value === null ? 0 : Math.max(Number(value), 0);
          const left = x(index) - inner / 2 + seriesIndex * barWidth;
          root.append(
            svg("rect", {
              class: series.className,
              x: left.toFixed(1),
              y: y(number).toFixed(1),
              width: Math.max(barWidth - (groups > 1 ? 1 : 0), 0.5).toFixed(1),
              height: (y(0) - y(number)).toFixed(1),
              rx: Math.min(2, barWidth / 4).toFixed(1),
              "data-series": series.key,
              "data-label": labels[index],
              "data-value": value ?? "",
            }),
          );
        });
      });
    }

    if (!numbers.some((value) => value > 0)) {
      root.append(svg("text", { class: "empty", x: margin.left + plotWidth / 2, y: margin.top + plotHeight / 2, "text-anchor": "middle", text: spec.emptyText }));
    }

    const guide = svg("line", { class: "guide", y1: margin.top, y2: margin.top + plotHeight, visibility: "hidden" });
    root.append(guide);
    const hit = svg("rect", { class: "hit", x: margin.left, y: margin.top, width: plotWidth, height: plotHeight });
    root.append(hit);
    const tooltip = $("tooltip");
    hit.addEventListener("mousemove", (event) => {
      const bounds = root.getBoundingClientRect();
      const index = Math.min(count - 1, Math.max(0, Math.floor((event.clientX - bounds.left - margin.left) / band)));
      guide.setAttribute("x1", x(index));
      guide.setAttribute("x2", x(index));
      guide.setAttribute("visibility", "visible");
      tooltip.replaceChildren(
        el("div", { class: "tt-title", text: spec.xTitle(index) }),
        ...spec.tooltip(index).map(([name, text]) => el("div", { class: "tt-row" }, el("span", { text: name }), el("span", { text }))),
      );
      tooltip.hidden = false;
      const left = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
      tooltip.style.left = `${left}px`;
      tooltip.style.top = `${event.clientY + 14}px`;
    });
    hit.addEventListener("mouseleave", () => {
      guide.setAttribute("visibility", "hidden");
      tooltip.hidden = true;
    });
    container.replaceChildren(root);
  }

  function renderCharts() {
    if (!state.last) return;
    const { series } = state.last;
    const currency = series.currency;
    const buckets = series.buckets;
    const labels = buckets.map((bucket) => bucket.label);
    const xLabel = (label) => humanDate(label, false);
    const xTitle = (index) => {
      const label = labels[index];
      if (series.interval === "week") return `Week of ${humanDate(label, true)}`;
      return humanDate(label, series.interval === "day");
    };
    drawChart($("chart-rate"), {
      name: "conversion_rate",
      type: "line",
      labels,
      series: [{ key: "conversion_rate", values: buckets.map((bucket) => bucket.conversion_rate) }],
      tick: (value) => `${Number((value * 100).toFixed(2))}%`,
      emptyStep: 0.05,
      emptyText: "No unique clicks in this range",
      xLabel,
      xTitle,
      tooltip: (index) => [
        ["Conversion rate", formatRate(buckets[index].conversion_rate)],
        ["Conversions", formatCount(buckets[index].conversions)],
        ["Unique clicks", formatCount(buckets[index].unique_clicks)],
      ],
    });
    drawChart($("chart-revenue"), {
      name: "revenue",
      type: "bars",
      labels,
      series: [
        { key: "revenue", className: "bar-revenue", values: buckets.map((bucket) => bucket.revenue) },
        { key: "reward_cost", className: "bar-cost", values: buckets.map((bucket) => bucket.reward_cost) },
      ],
      tick: (value) => compactMoney(value, currency),
      emptyStep: 100,
      emptyText: "No revenue in this range",
      xLabel,
      xTitle,
      tooltip: (index) => [
        ["Revenue", formatMoney(buckets[index].revenue, currency)],
        ["Reward cost", formatMoney(buckets[index].reward_cost, currency)],
        ["Conversions", formatCount(buckets[index].conversions)],
      ],
    });
  }

  // ---------- CSV exports: fetched with the key, saved as a file ----------

  function updateExportLinks(program, range, interval) {
    const base = `/v1/programs/${program.id}/metrics`;
    const targets = {
      summary: apiUrl(`${base}/summary`, { ...range, format: "csv" }),
      timeseries: apiUrl(`${base}/timeseries`, { ...range, interval, tz: state.tz, format: "csv" }),
      referrers: apiUrl(`${base}/referrers`, { ...range, order_by: state.order, limit: 500, format: "csv" }),
      channels: apiUrl(`${base}/channels`, { ...range, limit: 500, format: "csv" }),
      conversions: apiUrl("/v1/conversions", { program_id: program.id, ...range, format: "csv" }),
      rewards: apiUrl("/v1/rewards", { program_id: program.id, ...range, format: "csv" }),
    };
    for (const link of document.querySelectorAll("a[data-export]")) {
      const url = targets[link.dataset.export];
      link.href = url.pathname + url.search;
      link.dataset.filename = `${link.dataset.export}_${state.from}_${state.to}.csv`;
    }
  }

  async function download(link) {
    if (link.getAttribute("aria-busy") === "true") return;
    link.setAttribute("aria-busy", "true");
    try {
      const response = await request(new URL(link.getAttribute("href"), window.location.origin));
      const blob = await response.blob();
      const href = URL.createObjectURL(blob);
      const anchor = el("a", { href, download: link.dataset.filename, hidden: true });
      document.body.append(anchor);
      anchor.click();
      anchor.remove();
      setTimeout(() => URL.revokeObjectURL(href), 30000);
    } catch (error) {
      failed(error);
    } finally {
      link.removeAttribute("aria-busy");
    }
  }

  // ---------- wiring ----------

  function debounce(fn, wait) {
    let timer = null;
    return (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), wait);
    };
  }

  function start() {
    readHash();
    $("key-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      if (!key) {
        showGate("Paste an API key first.");
        return;
      }
      const button = $("open");
      button.disabled = true;
      try {
        await openWithKey(key);
      } catch (error) {
        state.key = null;
        sessionStorage.removeItem(KEY_STORAGE);
        showGate(keyProblem(error) || `Could not reach the service: ${error.message}`);
      } finally {
        button.disabled = false;
      }
    });
    $("signout").addEventListener("click", () => forgetKey(null));
    $("program").addEventListener("change", (event) => {
      state.program = state.programs.find((program) => program.id === event.target.value) || null;
      refresh();
    });
    $("presets").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-days]");
      if (!button) return;
      setPreset(Number(button.dataset.days));
      refresh();
    });
    for (const id of ["from", "to"]) {
      $(id).addEventListener("change", () => {
        const from = $("from").value;
        const to = $("to").value;
        if (!parseDate(from) || !parseDate(to)) return;
        state.from = from <= to ? from : to;
        state.to = from <= to ? to : from;
        refresh();
      });
    }
    $("order").addEventListener("change", (event) => {
      state.order = event.target.value;
      refresh();
    });
    document.addEventListener("click", (event) => {
      const link = event.target.closest("a[data-export]");
      if (!link) return;
      event.preventDefault();
      download(link);
    });
    window.addEventListener("resize", debounce(renderCharts, 150));

    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (!saved) {
      showGate(null);
      return;
    }
    openWithKey(saved).catch((error) => {
      const problem = keyProblem(error);
      if (problem && error.status === 401) forgetKey(problem);
      else {
        $("gate").hidden = true;
        $("board").hidden = false;
        failed(error);
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// Referral ops dashboard, 5/5: reads the JSON API with the key the user enters.
//
// The key lives in this tab's sessionStorage only and leaves the page only in the
// Authorization header of same-origin fetch calls. Every number shown is the API's own
// (format.js); the DOM is built with textContent and attributes, never innerHTML (dom.js).
"use strict";

(() => {
  const {
    $,
    el,
    parseDate,
    isoDate,
    addDays,
    daysBetween,
    humanDate,
    humanDateTime,
    intervalFor,
    hideTooltip,
    renderCharts,
    renderKpis,
    renderFunnel,
    renderReferrers,
    renderChannels,
    renderRecent,
  } = window.ReferralDashboard;

  const KEY_STORAGE = "referral-dashboard.key";
  const RECENT_ROWS = 10;
  const MAX_PAGES = 10;
  const PAGE_LIMIT = 200;
  const MAX_RANGE_DAYS = 400;
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

  // The range sent to the API: [local midnight of `from`, local midnight after `to`).
  function rangeInstants() {
    return {
      from: parseDate(state.from).toISOString(),
      to: parseDate(addDays(state.to, 1)).toISOString(),
    };
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
    let preset = null;
    for (const button of $("presets").querySelectorAll("button")) {
      const days = Number(button.dataset.days);
      const pressed = state.to === today && daysBetween(state.from, state.to) === days - 1;
      button.setAttribute("aria-pressed", pressed ? "true" : "false");
      if (pressed) preset = button.textContent;
    }
    // The phone's one-line header shows the range on the button that opens the range panel.
    $("range-toggle").textContent = preset || `${humanDate(state.from, false)} – ${humanDate(state.to, false)}`;
  }

  function openRangePanel(open) {
    $("controls").dataset.open = open ? "true" : "false";
    $("range-toggle").setAttribute("aria-expanded", open ? "true" : "false");
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
      renderCharts(series);
      renderFunnel(summary);
      renderReferrers(leaders);
      renderChannels(channels);
      board.dataset.state = "ready";
      $("footnote").textContent =
        `Times in ${state.tz}. Figures as of ${humanDateTime(new Date().toISOString())}; ` +
        "rates are the API's (4 places), shown as percentages; ratios are shown to 2 places.";
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
    $("signout").addEventListener("click", () => {
      openRangePanel(false);
      forgetKey(null);
    });
    $("range-toggle").addEventListener("click", () => {
      openRangePanel($("controls").dataset.open !== "true");
    });
    $("program").addEventListener("change", (event) => {
      state.program = state.programs.find((program) => program.id === event.target.value) || null;
      refresh();
    });
    $("presets").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-days]");
      if (!button) return;
      setPreset(Number(button.dataset.days));
      openRangePanel(false);
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
    window.addEventListener("resize", debounce(() => renderCharts(state.last && state.last.series), 150));
    window.addEventListener("scroll", hideTooltip, { passive: true });
    document.addEventListener("pointerdown", (event) => {
      if (!event.target.closest(".chart")) hideTooltip();
    });

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

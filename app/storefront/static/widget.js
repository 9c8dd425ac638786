/*! widget.js v2: <referral-share> (link, QR code, sharing, rewards), <referral-redeem> */
(() => {
  "use strict";
  if (!window.customElements || customElements.get("referral-share")) return;
  const script =
    document.currentScript || document.querySelector("script[src*='/js/v2/widget.js']");
  const home = new URL(script ? script.src : "/", location.href).origin;

  // Every node is built from text (createElement, textContent, attributes): nothing that comes
  // from the service or the page is ever parsed as markup.
  const h = (tag, props, ...children) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value == null || value === false) continue;
      if (name == "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) if (child != null && child !== false) node.append(child);
    return node;
  };

  // One rule a line (the served file drops indentation and comment lines, never line breaks).
  const CSS = [
    ":host{display:block;--a:var(--referral-accent,#4f46e5);--at:var(--referral-accent-text,#fff);--bg:var(--referral-background,#fff);--fg:var(--referral-text,#121826);--mu:var(--referral-muted,#5f6878);--bd:var(--referral-border,#e1e4ec);--sf:var(--referral-surface,#f6f7fb);--ok:var(--referral-good,#15803d);--no:var(--referral-bad,#b91c1c);--r:var(--referral-radius,12px);font-family:var(--referral-font,inherit);color:var(--fg);line-height:1.45;max-width:100%}",
    ":host([hidden]){display:none}",
    "*{box-sizing:border-box}",
    "[hidden],.card:empty{display:none!important}",
    ".card{background:var(--bg);border:1px solid var(--bd);border-radius:var(--r);padding:16px;display:grid;gap:14px;min-width:0}",
    "h2,h3{margin:0;line-height:1.25}",
    "h2{font-size:1.15em}",
    "h3{font-size:.95em;color:var(--mu);font-weight:600}",
    "p{margin:0}",
    "section{display:grid;gap:8px;min-width:0}",
    "label{font-size:.9em;font-weight:600}",
    ".row{display:flex;gap:8px;min-width:0}",
    "input{flex:1;min-width:0;font:inherit;color:inherit;background:var(--sf);border:1px solid var(--bd);border-radius:calc(var(--r)*.66);padding:10px 12px}",
    "#code{text-transform:uppercase;letter-spacing:.04em}",
    "button,a.button{font:inherit;font-weight:600;cursor:pointer;border-radius:calc(var(--r)*.66);padding:10px 14px;border:1px solid var(--a);background:var(--a);color:var(--at);text-decoration:none;display:inline-flex;align-items:center;justify-content:center;min-height:44px;white-space:nowrap}",
    "button.quiet,a.button{background:var(--bg);color:var(--a)}",
    "button:disabled{opacity:.6;cursor:default}",
    "button:focus-visible,a:focus-visible,input:focus-visible{outline:3px solid var(--a);outline-offset:2px}",
    ".qr{margin:0;display:grid;justify-items:center;gap:6px;font-size:.85em}",
    ".qr img{width:160px;height:160px;background:#fff;box-shadow:0 0 0 1px var(--bd);border-radius:calc(var(--r)*.33)}",
    ".channels{display:grid;grid-template-columns:repeat(auto-fill,minmax(110px,1fr));gap:8px}",
    ".status{min-height:1.45em;margin-top:-8px;font-size:.9em;color:var(--ok)}",
    ".note{color:var(--mu)}",
    ".bad{color:var(--no)}",
    ".good{color:var(--ok)}",
    ".offer{font-size:1.05em}",
    "progress{width:100%;height:10px;border:0;border-radius:99px;background:var(--sf);overflow:hidden;appearance:none}",
    "progress::-webkit-progress-bar{background:var(--sf)}",
    "progress::-webkit-progress-value{background:var(--a);border-radius:99px}",
    "progress::-moz-progress-bar{background:var(--a)}",
    "dl{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:8px;margin:0}",
    "dl div{background:var(--sf);border-radius:calc(var(--r)*.66);padding:8px 10px;min-width:0}",
    "dt{font-size:.8em;color:var(--mu)}",
    "dd{margin:0;font-weight:700;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}",
    "ul{list-style:none;margin:0;padding:0;display:grid;gap:6px}",
    "li{display:grid;grid-template-columns:1fr auto;gap:2px 10px;padding:8px 0;border-top:1px solid var(--bd)}",
    "li .why{grid-column:1/-1;font-size:.85em;color:var(--mu);overflow-wrap:anywhere}",
    ".amount{font-weight:700;font-variant-numeric:tabular-nums}",
    ".badge{font-size:.8em;font-weight:600;border-radius:99px;padding:2px 8px;background:var(--sf);align-self:start}",
    ".badge[data-status=paid],.badge[data-status=approved]{color:var(--ok)}",
    ".badge[data-status=reversed]{color:var(--no)}",
  ].join("\n");
  let sheet = null;
  const style = (root) => {
    try {
      if (!sheet) (sheet = new CSSStyleSheet()).replaceSync(CSS);
      // A constructed sheet needs no style-src: the widget runs under a shop's strict CSP.
      root.adoptedStyleSheets = [sheet];
    } catch (old) {
      root.append(h("style", { text: CSS }));
    }
  };

  class Problem extends Error {
    constructor(status, code, detail) {
      super(detail || code);
      Object.assign(this, { status, code, detail });
    }
  }
  // One call to the service: the answer's JSON, or a Problem (status 0: the network failed).
  const call = async (api, credential, path, options = {}) => {
    const { method = options.body ? "POST" : "GET", body } = options;
    let response;
    try {
      response = await fetch(api + path, {
        method,
        headers: {
          Authorization: "Bearer " + credential,
          ...(body && { "Content-Type": "application/json" }),
        },
        body: body && JSON.stringify(body),
        credentials: "omit",
      });
    } catch (failed) {
      throw new Problem(0, "network");
    }
    const data = response.status == 204 ? null : await response.json().catch(() => null);
    if (!response.ok) {
      const code = (data && data.code) || "http_" + response.status;
      throw new Problem(response.status, code, data && data.detail);
    }
    return data;
  };
  // Every row of a paginated list (oldest first), at most `pages` pages of 100.
  const everyPage = async (get, path, pages = 20) => {
    const rows = [];
    let cursor = null;
    for (let page = 0; page < pages; page++) {
      const next = cursor ? "&cursor=" + encodeURIComponent(cursor) : "";
      const found = await get(`${path}?limit=100${next}`);
      rows.push(...found.data);
      if (!(cursor = found.next_cursor)) break;
    }
    return rows;
  };

  // Amounts are the API's decimal strings: Intl formats a string exactly (no float on the way).
  const langOf = (node) => (node.closest("[lang]") || {}).lang || navigator.language || "en";
  const number = (value, lang) => new Intl.NumberFormat(lang).format(value);
  const money = (value, unit, lang, points = "{} points") => {
    if (unit == "points") return points.replace("{}", number(value, lang));
    try {
      return new Intl.NumberFormat(lang, { style: "currency", currency: unit }).format(value);
    } catch (unknown) {
      return `${value} ${unit}`;
    }
  };
  const day = (iso, lang) => new Date(iso).toLocaleDateString(lang, { dateStyle: "medium" });
  const fire = (node, name, detail) =>
    node.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  // A property the page set before this script defined the element: take it over.
  const adopt = (node, names) => {
    for (const name of names) {
      if (!Object.prototype.hasOwnProperty.call(node, name)) continue;
      const value = node[name];
      delete node[name];
      node[name] = value;
    }
  };

  const SHARE_TEXT = {
    loading: "Loading your referral link…",
    expired: "This referral session has ended. Reload the page, or ask the shop for a new link.",
    failed: "Your referral details could not be loaded.",
    retry: "Try again",
    title: "Invite friends",
    offer: "Your friends get: {}",
    link: "Your referral link",
    copy: "Copy",
    copied: "Link copied.",
    copyByHand: "Link selected: copy it with Ctrl+C (⌘C).",
    share: "Share…",
    more: "More ways to share",
    qr: "Or let a friend scan your link",
    qrImage: "QR code of your referral link",
    noCode: "You have no active referral code at the moment.",
    progress: "Your progress",
    balance: "Your rewards",
    pending: "Pending",
    approved: "Approved",
    paid: "Paid",
    reversed: "Reversed",
    noRewards: "No rewards yet: they appear here when a friend buys.",
    approves: "approved on {}",
    points: "{} points",
    email: "Email",
    whatsapp: "WhatsApp",
    sms: "SMS",
    x: "X",
    facebook: "Facebook",
    linkedin: "LinkedIn",
  };
  const CHANNELS = ["whatsapp", "email", "sms", "x", "facebook", "linkedin"];

  class ReferralShare extends HTMLElement {
    static observedAttributes = ["token", "api", "rewards-limit", "channels", "qr"];
    constructor() {
      super();
      style(this.attachShadow({ mode: "open" }));
      this.card = this.shadowRoot.appendChild(h("div", { class: "card", part: "card" }));
      this.texts = {};
      this.seq = 0;
      adopt(this, ["token", "texts"]);
    }
    get token() {
      return this._token || this.getAttribute("token");
    }
    set token(value) {
      this._token = value;
      this.load();
    }
    get api() {
      return (this.getAttribute("api") || home).replace(/\/$/, "");
    }
    t(key, value) {
      const text = { ...SHARE_TEXT, ...this.texts }[key];
      return value == null ? text : text.replace("{}", value);
    }
    connectedCallback() {
      this.started = true;
      this.load();
    }
    attributeChangedCallback(name, before, after) {
      if (this.started && before != after && (name != "token" || !this._token)) this.load();
    }
    show(state, ...nodes) {
      this.dataset.state = state;
      this.card.setAttribute("aria-busy", state == "loading" ? "true" : "false");
      this.card.replaceChildren(...nodes.flat().filter((node) => node));
    }
    async load() {
      const seq = ++this.seq;
      const token = this.token;
      if (!this.isConnected || !token) return;
      this.show("loading", h("p", { class: "note", part: "message", text: this.t("loading") }));
      const get = (path) => call(this.api, token, "/v1/me" + path);
      try {
        const [me, progress, rewards, balance] = await Promise.all([
          get(""),
          get("/progress"),
          everyPage(get, "/rewards"),
          get("/balance"),
        ]);
        if (seq != this.seq) return; // a newer token is loading
        this.data = { me, progress, rewards, balance };
        this.render(this.data);
        fire(this, "referral-share:load", this.data);
      } catch (problem) {
        if (seq != this.seq) return;
        if (problem.status == 401) {
          this.show("expired", this.alert("expired"));
          fire(this, "referral-share:expired", { code: problem.code, detail: problem.detail });
        } else {
          const again = { type: "button", class: "quiet", part: "button retry" };
          const retry = h("button", { ...again, onclick: () => this.load(), text: this.t("retry") });
          this.show("error", this.alert("failed"), h("div", {}, retry));
          fire(this, "referral-share:error", { status: problem.status, code: problem.code });
        }
      }
    }
    alert(key) {
      return h("p", { class: "bad", part: "message", role: "alert", text: this.t(key) });
    }
    render({ me, progress, rewards, balance }) {
      const lang = langOf(this);
      const share = me.share;
      const offer = (share && share.offer) || me.referee_offer;
      this.show(
        "ready",
        h("h2", { part: "title", text: this.t("title") }),
        offer && h("p", { class: "offer", part: "offer", text: this.t("offer", offer) }),
        share
          ? this.linkBlock(share)
          : h("p", { class: "note", part: "message", text: this.t("noCode") }),
        share && this.getAttribute("qr") != "none" && this.qrBlock(share),
        this.progressBlock(progress),
        this.rewardsBlock(rewards, balance, lang)
      );
    }
    linkBlock(share) {
      const input = h("input", { id: "link", readonly: true, part: "link", value: share.link });
      const status = h("p", { class: "status", part: "status", "aria-live": "polite" });
      const copy = async () => {
        try {
          await navigator.clipboard.writeText(share.link);
          status.textContent = this.t("copied");
        } catch (noClipboard) {
          input.focus();
          input.select();
          let copied = false;
          try {
            copied = document.execCommand("copy");
          } catch (refused) {}
          status.textContent = this.t(copied ? "copied" : "copyByHand");
        }
        fire(this, "referral-share:copy", { link: share.link });
      };
      const wanted = (this.getAttribute("channels") || "")
        .split(/[\s,]+/)
        .filter((channel) => CHANNELS.includes(channel));
      const channels = h(
        "div",
        { class: "channels", part: "channels", role: "group", "aria-label": this.t("more") },
        (wanted.length ? wanted : CHANNELS).map((channel) => {
          const url = share[channel].share_url;
          const web = /^https:/.test(url);
          return h("a", {
            class: "button",
            part: "button channel",
            href: url,
            "data-channel": channel,
            target: web && "_blank",
            rel: web && "noopener noreferrer",
            onclick: () => fire(this, "referral-share:share", { channel, url }),
            text: this.t(channel),
          });
        })
      );
      const blocks = [
        h("label", { for: "link", text: this.t("link") }),
        h(
          "div",
          { class: "row" },
          input,
          h("button", { type: "button", part: "button copy", onclick: copy, text: this.t("copy") })
        ),
        status,
      ];
      if (!navigator.share) return [...blocks, channels];
      // The browser's share sheet first; the channels stay one tap away.
      channels.hidden = true;
      channels.id = "channels";
      const native = h("button", {
        type: "button",
        part: "button share",
        onclick: () =>
          navigator
            .share({ title: share.email.subject, text: share.offer || "", url: share.link })
            .then(
              () => fire(this, "referral-share:share", { channel: "native", url: share.link }),
              () => null // dismissed
            ),
        text: this.t("share"),
      });
      const more = h("button", {
        type: "button",
        class: "quiet",
        part: "button more",
        "aria-expanded": "false",
        "aria-controls": "channels",
        onclick: () => {
          channels.hidden = !channels.hidden;
          more.setAttribute("aria-expanded", String(!channels.hidden));
        },
        text: this.t("more"),
      });
      return [...blocks, h("div", { class: "row" }, native, more), channels];
    }
    // The plain link's QR code, the service's own qr.svg (so img-src names the service).
    qrBlock(share) {
      const src = `${this.api}/v1/codes/${encodeURIComponent(share.code)}/qr.svg?size=160`;
      const size = { width: 160, height: 160 };
      const img = h("img", { src, alt: this.t("qrImage"), ...size, part: "qr-image" });
      const caption = h("figcaption", { class: "note", text: this.t("qr") });
      const figure = h("figure", { class: "qr", part: "qr" }, img, caption);
      img.onerror = () => (figure.hidden = true); // refused by the page's CSP, or unavailable
      return figure;
    }
    progressBlock(progress) {
      if (!progress.rules.length) return null;
      return h(
        "section",
        { part: "progress", "data-successful": progress.successful_referrals },
        h("h3", { text: this.t("progress") }),
        progress.rules.map((rule) => {
          const sentence = h("p", { id: "rule-" + rule.rule_id, text: rule.sentence });
          const top = rule.next == null || rule.referrals_needed == null;
          if (top) return h("div", { "data-rule": rule.rule_id }, sentence);
          const done = Math.max(0, progress.successful_referrals - rule.current.from_referral + 1);
          const max = done + rule.referrals_needed;
          const labelled = { "aria-labelledby": sentence.id };
          const bar = h("progress", { part: "meter", max, value: done, ...labelled });
          const step = { "data-rule": rule.rule_id, "data-needed": rule.referrals_needed };
          return h("div", step, sentence, bar);
        })
      );
    }
    rewardsBlock(rewards, balance, lang) {
      const limit = this.hasAttribute("rewards-limit") ? +this.getAttribute("rewards-limit") : 5;
      const show = (amount, unit) => money(amount, unit, lang, this.t("points"));
      const cell = (line, field) =>
        h(
          "div",
          {},
          h("dt", { text: this.t(field) }),
          h("dd", { "data-field": field, "data-value": line[field] }, show(line[field], line.unit))
        );
      const entry = (reward) => {
        const when = reward.approves_at && this.t("approves", day(reward.approves_at, lang));
        const row = { "data-reward": reward.id, "data-status": reward.status };
        return h(
          "li",
          { ...row, "data-amount": reward.amount, "data-unit": reward.unit },
          h("span", { class: "amount", text: show(reward.amount, reward.unit) }),
          h("span", { class: "badge", "data-status": reward.status, text: this.t(reward.status) }),
          h("span", { class: "why", text: when ? `${reward.why} · ${when}` : reward.why })
        );
      };
      const recent = limit > 0 ? rewards.slice(-limit).reverse() : [];
      return h(
        "section",
        { part: "rewards" },
        h("h3", { text: this.t("balance") }),
        balance.balances.map((line) =>
          h(
            "dl",
            { part: "balance", "data-unit": line.unit },
            ["pending", "approved", "paid"].map((field) => cell(line, field))
          )
        ),
        !rewards.length && h("p", { class: "note", text: this.t("noRewards") }),
        recent.length > 0 && h("ul", { part: "reward-list" }, recent.map(entry))
      );
    }
  }
  ReferralShare.kit = Object.freeze({ h, call, everyPage, money, day, fire, langOf, Problem });

  const REDEEM_TEXT = {
    label: "Referral code",
    check: "Check",
    checking: "Checking…",
    apply: "Apply code",
    applying: "Applying…",
    gives: "It gives you: {}",
    noOffer: "This code is valid.",
    signIn: "Sign in to apply this code.",
    redeemed: "Code applied: {}",
    redeemedPlain: "Code applied.",
  };
  // What each refusal of GET /v1/codes/{code} or POST /v1/redemptions means to the customer.
  const REFUSALS = {
    code_not_found: "We don't know this code. Check it and try again.",
    program_not_active: "This referral offer has ended.",
    code_disabled: "This code is no longer active.",
    code_expired: "This code has expired.",
    code_exhausted: "This code has been used as many times as it may be.",
    self_referral: "This is your own code: share it with friends instead.",
    already_referred: "You have already been referred, so this code cannot be applied.",
    click_not_found: "We couldn't find the referral link you came from. Open it again.",
    redemption_proof_required: "Please sign in (or open your friend's link) to apply this code.",
    click_code_mismatch: "This code doesn't match the referral link you came from.",
    click_already_used: "The referral link you came from has already been used by someone else.",
    customer_token_invalid: "We couldn't confirm your account. Reload the page and try again.",
    customer_token_expired: "Your sign-in has expired. Reload the page and try again.",
    origin_not_allowed: "Referral codes can't be used on this site.",
    rate_limited: "Too many tries. Please wait a minute and try again.",
    malformed: "A code has letters, digits and dashes only.",
    network: "We couldn't reach the referral service. Try again.",
    other: "This code can't be applied right now.",
  };
  const CODE = /^[A-Za-z0-9][\w-]{0,63}$/;

  class ReferralRedeem extends HTMLElement {
    constructor() {
      super();
      style(this.attachShadow({ mode: "open" }));
      this.texts = {};
      this.refusals = {};
      const field = { id: "code", name: "code", part: "input", autocomplete: "off" };
      const typing = { autocapitalize: "characters", spellcheck: "false", maxlength: "64" };
      this.input = h("input", { ...field, ...typing, required: true, oninput: () => this.reset() });
      this.checkButton = h("button", { type: "submit", part: "button check" });
      this.message = h("div", { part: "message", role: "status", "aria-live": "polite" });
      const apply = { type: "button", part: "button apply", hidden: true };
      this.applyButton = h("button", { ...apply, onclick: () => this.redeem() });
      this.label = h("label", { for: "code" });
      const form = h(
        "form",
        { class: "card", part: "card form", novalidate: true, onsubmit: (e) => this.check(e) },
        this.label,
        h("div", { class: "row" }, this.input, this.checkButton),
        this.message,
        h("div", {}, this.applyButton)
      );
      this.shadowRoot.append(form);
      adopt(this, ["customerId", "customerToken", "texts", "refusals"]);
    }
    get key() {
      return this.getAttribute("data-key") || this.getAttribute("key");
    }
    get api() {
      return (this.getAttribute("api") || home).replace(/\/$/, "");
    }
    get customerId() {
      return this._customerId || this.getAttribute("customer-id");
    }
    set customerId(value) {
      this._customerId = value;
    }
    get customerToken() {
      return this._customerToken || this.getAttribute("customer-token");
    }
    set customerToken(value) {
      this._customerToken = value;
    }
    t(key, value) {
      const text = { ...REDEEM_TEXT, ...this.texts }[key];
      return value == null ? text : text.replace("{}", value);
    }
    refusal(code) {
      const all = { ...REFUSALS, ...this.refusals };
      return all[code] || all.other;
    }
    connectedCallback() {
      this.label.textContent = this.t("label");
      this.checkButton.textContent = this.t("check");
      this.applyButton.textContent = this.t("apply");
      this.input.value = this.input.value || this.getAttribute("code") || "";
      this.reset();
      // A shopper who came through a link finds their friend's code filled in, once the
      // snippet (loaded async, maybe after this script) has kept it.
      const fill = () => {
        const kept = window.referrals && window.referrals.attribution().code;
        if (kept && !this.input.value && this.dataset.state == "idle") this.input.value = kept;
      };
      fill();
      if (this.started) return;
      this.started = true;
      addEventListener("load", fill);
      if (window.referrals) window.referrals.ready.then(fill);
    }
    reset() {
      this.dataset.state = "idle";
      this.lookup = null;
      this.applyButton.hidden = true;
      this.say("", "");
    }
    say(text, tone) {
      this.message.className = tone;
      this.message.textContent = text;
    }
    refuse(problem) {
      this.dataset.state = "refused";
      this.applyButton.hidden = true;
      this.dataset.refusal = problem.code;
      this.say(this.refusal(problem.status == 429 ? "rate_limited" : problem.code), "bad");
      fire(this, "referral-redeem:refused", { code: problem.code, status: problem.status });
    }
    busy(button, key, on) {
      button.disabled = on;
      button.textContent = this.t(key);
    }
    async check(event) {
      if (event) event.preventDefault();
      if (this.dataset.state == "redeemed") return; // one redemption per customer and page
      const code = this.input.value.trim();
      if (!CODE.test(code)) return this.refuse(new Problem(0, "malformed"));
      this.dataset.state = "checking";
      delete this.dataset.refusal;
      this.busy(this.checkButton, "checking", true);
      try {
        const found = await call(this.api, this.key, "/v1/codes/" + encodeURIComponent(code));
        if (!found.valid) {
          const state = found.state == "program_not_active" ? found.state : "code_" + found.state;
          return this.refuse(new Problem(409, state));
        }
        this.lookup = found;
        this.dataset.state = "valid";
        const offer = found.referee_offer;
        const gives = offer ? this.t("gives", offer) : this.t("noOffer");
        this.say(this.customerId ? gives : gives + " " + this.t("signIn"), "good");
        this.applyButton.hidden = !this.customerId;
        fire(this, "referral-redeem:valid", found);
      } catch (problem) {
        this.refuse(problem);
      } finally {
        this.busy(this.checkButton, "check", false);
      }
    }
    async redeem() {
      const lookup = this.lookup;
      if (!lookup || !this.customerId) return;
      const body = { code: lookup.code, customer_id: this.customerId };
      if (this.customerToken) body.customer_token = this.customerToken;
      if (this.getAttribute("email")) body.email = this.getAttribute("email");
      // The snippet's click vouches for the customer, but only for the code it was a click on.
      const kept = window.referrals ? window.referrals.attribution() : {};
      const same = kept.code && kept.code.toUpperCase() == lookup.code.toUpperCase();
      const clickId = this.getAttribute("click-id") || (same && kept.click_id);
      if (clickId) body.click_id = clickId;
      this.dataset.state = "redeeming";
      this.busy(this.applyButton, "applying", true);
      try {
        const redemption = await call(this.api, this.key, "/v1/redemptions", { body });
        this.dataset.state = "redeemed";
        this.applyButton.hidden = true;
        this.input.readOnly = true;
        this.checkButton.disabled = true;
        const offer = lookup.referee_offer;
        this.say(offer ? this.t("redeemed", offer) : this.t("redeemedPlain"), "good");
        fire(this, "referral-redeem:redeemed", redemption);
      } catch (problem) {
        this.refuse(problem);
      } finally {
        this.busy(this.applyButton, "apply", false);
      }
    }
  }

  customElements.define("referral-share", ReferralShare);
  customElements.define("referral-redeem", ReferralRedeem);
})();

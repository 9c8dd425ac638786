/*! referrals.js v1: keeps a shopper's referral (ref, click_id) on the storefront for checkout */
(() => {
  "use strict";
  if (window.referrals) return;
  const script =
    document.currentScript || document.querySelector("script[src*='/js/v1/referrals.js']");
  const opts = (script && script.dataset) || {};
  const api = opts.api || new URL(script ? script.src : "/", location.href).origin;
  const name = opts.cookie || "referral";
  const links =
    "a[href^='https://buy.stripe.com/']:not([data-referrals=off]),a[data-referrals=stripe]";
  const query = new URLSearchParams(location.search);
  const ref = query.get("ref");
  const urlClick = query.get("click_id");
  let pending = !!ref && /^[A-Za-z0-9][\w-]{0,63}$/.test(ref);
  let visitor = null;
  let ready;

  const storage = (use) => {
    try {
      return use(localStorage);
    } catch (blocked) {
      return null;
    }
  };
  const cookie = () => {
    for (const part of document.cookie.split("; ")) {
      if (part.startsWith(name + "=")) return part.slice(name.length + 1);
    }
  };
  // One record, a query string that the shop's server can read too:
  // code, click_id, visitor_id, model, expires (Unix seconds).
  const read = () => {
    const raw = cookie() || storage((s) => s.getItem(name)) || "";
    const record = Object.fromEntries(new URLSearchParams(raw));
    return record.code && record.expires * 1000 > Date.now() ? record : null;
  };
  const setCookie = (value, seconds) => {
    document.cookie =
      `${name}=${value};Path=/;Max-Age=${seconds};SameSite=Lax` +
      (opts.cookieDomain ? ";Domain=" + opts.cookieDomain : "") +
      (location.protocol == "https:" ? ";Secure" : "");
  };
  const write = (record) => {
    const value = "" + new URLSearchParams(Object.entries(record).filter((pair) => pair[1]));
    setCookie(value, Math.round(record.expires - Date.now() / 1000));
    // Cookies blocked: localStorage keeps it instead.
    const kept = cookie() == value;
    storage((s) => (kept ? s.removeItem(name) : s.setItem(name, value)));
  };
  const clear = () => {
    setCookie("", 0);
    storage((s) => s.removeItem(name));
  };
  // Under data-consent="required", a stored record is the mark of an earlier consent.
  let consented = opts.consent != "required" || !!read();

  // The answer's JSON; false when the code is unknown (404) or its program inactive (409).
  const call = (path, body) =>
    fetch(api + path, {
      method: body ? "POST" : "GET",
      headers: {
        Authorization: "Bearer " + opts.key,
        ...(body && { "Content-Type": "application/json" }),
      },
      body: body && JSON.stringify(body),
      credentials: "omit",
    }).then(
      (r) => (r.ok ? r.json() : r.status == 404 || r.status == 409 ? false : null),
      () => null
    );

  // A page opened with ?ref=CODE: keep it, unless first touch keeps an earlier one.
  const land = async () => {
    pending = false;
    const before = read();
    visitor =
      (before && before.visitor_id) ||
      visitor ||
      Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
        (b + 256).toString(16).slice(1)
      ).join("");
    const uuid = /^[\da-f]{8}(-[\da-f]{4}){3}-[\da-f]{12}$/i;
    const clickId = uuid.test(urlClick) ? urlClick.toLowerCase() : null;
    const start = Date.now() / 1000;
    let model = opts.attribution || (before && before.model) || "last_touch";
    let days = +opts.windowDays || 30;
    const keep = () => before && model == "first_touch";
    const save = (click_id) =>
      write({
        code: ref,
        click_id,
        visitor_id: visitor,
        model,
        expires: Math.round(start + days * 86400),
      });
    // At once: a shopper who leaves before the service answers loses nothing.
    if (!keep()) save(clickId);
    if (!opts.key) return;
    const visit = { code: ref, visitor_id: visitor, landing_url: location.href.slice(0, 2048) };
    if (/^https?:/.test(document.referrer)) visit.referring_url = document.referrer;
    for (const utm of ["utm_source", "utm_medium", "utm_campaign"]) {
      if (query.get(utm)) visit[utm] = query.get(utm).slice(0, 200);
    }
    const [program, click] = await Promise.all([
      opts.attribution && opts.windowDays ? null : call("/v1/codes/" + ref),
      // A code shared as text: the visit is recorded here, as /r/{code} would have.
      clickId ? { click_id: clickId, attributable: true } : call("/v1/clicks", visit),
    ]);
    if (!consented) return;
    if (program) {
      model = opts.attribution || program.attribution_model;
      days = +opts.windowDays || program.attribution_window_days;
    }
    // An unknown, disabled or expired code is not kept: what was there before stays.
    if (click !== false && (!click || click.attributable) && !keep()) save(click && click.click_id);
    else if (before) write(before);
    else clear();
  };

  const attribution = () => {
    const record = read() || {};
    return {
      code: record.code || null,
      click_id: record.click_id || null,
      visitor_id: record.visitor_id || null,
    };
  };
  const fillForm = (form) => {
    const found = attribution();
    found.referral_code = found.code;
    for (const field of ["referral_code", "click_id", "visitor_id"]) {
      let input = form.querySelector(`input[name=${field}]`);
      if (!found[field]) continue;
      if (!input) {
        input = form.appendChild(document.createElement("input"));
        input.type = "hidden";
        input.name = field;
      }
      input.value = found[field];
    }
    return form;
  };
  const stripeLink = (url) => {
    const link = new URL(url, location.href);
    const code = attribution().code;
    if (code) link.searchParams.set("client_reference_id", code);
    return link.href;
  };
  const shopifyCart = async () => {
    const found = attribution();
    if (!found.code) return null;
    const root = (window.Shopify && Shopify.routes && Shopify.routes.root) || "/";
    const response = await fetch(root + "cart/update.js", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      // A blank value removes an attribute: no stale click id from an older referral.
      body: JSON.stringify({
        attributes: { referral_code: found.code, click_id: found.click_id || "" },
      }),
      credentials: "same-origin",
    });
    return response.ok ? response.json() : null;
  };

  const decorate = (link) => (link.href = stripeLink(link.href));
  const decorateAll = () => document.querySelectorAll(links).forEach(decorate);
  const settle = (work) =>
    (ready = work
      .catch(() => null)
      .then(() => {
        decorateAll();
        if (opts.shopify != null && attribution().code) return shopifyCart().catch(() => null);
      }));
  const consent = (given) => {
    consented = !!given;
    if (consented) return settle(pending ? land() : ready);
    clear();
    visitor = null;
    return ready;
  };

  const onLink = (event) => {
    const link = event.target.closest && event.target.closest(links);
    if (link) decorate(link);
  };
  addEventListener("click", onLink, true);
  addEventListener("auxclick", onLink, true);
  addEventListener(
    "submit",
    (event) => event.target.matches("form[data-referrals]") && fillForm(event.target),
    true
  );
  addEventListener("DOMContentLoaded", decorateAll);
  settle(pending && consented ? land() : Promise.resolve());

  window.referrals = Object.freeze({
    attribution,
    fillForm,
    stripeLink,
    shopifyCart,
    consent,
    get ready() {
      return ready;
    },
  });
})();

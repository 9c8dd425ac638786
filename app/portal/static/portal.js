// The referrer portal: one referrer's link, friends, rewards and rank, read from /v1/me… with
// the session token of a magic link (/portal#token=rk_ref_…). The token arrives in the fragment,
// which no server sees; the page moves it to this tab's sessionStorage at once and takes it out
// of the address bar. The link, sharing, progress and rewards are the share widget's
// <referral-share>; this page adds the friends, the leaderboard and the leaderboard name.
// Nodes are built with the widget's h() (textContent and attributes), never from markup.
"use strict";

(() => {
  const STORAGE = "referral-portal.token";
  const $ = (id) => document.getElementById(id);
  const share = $("share");
  const { h, call, everyPage, day, langOf } = customElements.get("referral-share").kit;
  const lang = langOf(document.body);

  const ASK = "Ask the shop for a new link to see your referrals.";
  const GONE = {
    session_expired: ["This link has expired", ASK],
    session_revoked: ["This link is no longer valid", ASK],
    unauthorized: ["This link is not valid", ASK],
    missing: [
      "Open your link again",
      "This page needs the link the shop sent you. Ask the shop for a new link if you cannot find it.",
    ],
    signed_out: ["You are signed out", "To come back, ask the shop for a new link."],
  };
  const STATUSES = {
    redeemed: "Used your code",
    purchased: "Bought",
    rewarded: "Rewarded",
    refunded: "Refunded",
    not_counted: "Not counted",
  };

  // A fresh token in the fragment replaces the kept one; either way the address bar loses it.
  function takeToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const fresh = fragment.get("token");
    if (fresh) {
      sessionStorage.setItem(STORAGE, fresh);
      fragment.delete("token");
      const rest = fragment.toString();
      const kept = location.pathname + location.search + (rest ? "#" + rest : "");
      history.replaceState(null, "", kept);
    }
    return sessionStorage.getItem(STORAGE);
  }

  const token = takeToken();
  const me = (path, options) => call(location.origin, token, "/v1/me" + path, options);

  function gone(reason) {
    sessionStorage.removeItem(STORAGE);
    const [title, text] = GONE[reason] || GONE.unauthorized;
    $("gone-title").textContent = title;
    $("gone-text").textContent = text;
    $("main").dataset.state = "gone";
    $("main").dataset.reason = reason;
    $("portal").hidden = true;
    $("loading").hidden = true;
    $("signout").hidden = true;
    $("gone").hidden = false;
    document.title = title;
  }

  // A 401 anywhere ends the page; anything else is told in the section that asked.
  function failed(problem, section, note) {
    if (problem.status == 401) return gone(problem.code);
    $(section).dataset.state = "error";
    $(note).textContent = "This could not be loaded. Reload the page to try again.";
  }

  function showMe(data) {
    const referrer = data.referrer;
    $("program-name").textContent = data.program.name;
    const first = referrer.name && referrer.name.split(" ")[0];
    $("greeting").textContent = first ? `Hi ${first}` : "Your referrals";
    document.title = `Your referrals · ${data.program.name}`;
    showName(referrer.leaderboard_name);
    $("main").dataset.state = "ready";
    $("main").dataset.referrer = referrer.id;
    $("loading").hidden = true;
    $("portal").hidden = false;
    $("signout").hidden = false;
  }

  function showName(name) {
    $("leaderboard-name").value = name || "";
    $("leaderboard-name").dataset.saved = name || "";
    $("clear-name").hidden = !name;
  }

  async function loadFriends() {
    let friends;
    try {
      friends = await everyPage(me, "/referrals");
    } catch (problem) {
      return failed(problem, "friends", "friends-note");
    }
    const counts = {};
    for (const friend of friends) counts[friend.status] = (counts[friend.status] || 0) + 1;
    $("friends-note").textContent = friends.length
      ? `${friends.length} ${friends.length == 1 ? "friend" : "friends"} so far.`
      : "No friends yet: share your link, and they appear here once they use it.";
    $("friends-counts").replaceChildren(
      ...Object.keys(STATUSES)
        .filter((status) => counts[status])
        .map((status) =>
          h(
            "div",
            { "data-status": status },
            h("dt", { text: STATUSES[status] }),
            h("dd", { "data-value": counts[status], text: counts[status] })
          )
        )
    );
    // Newest first: the friend who just used the code is the one the referrer looks for.
    $("friends-list").replaceChildren(
      ...friends.reverse().map(({ status, referred_at: when, ...friend }) =>
        h(
          "li",
          { "data-referral": friend.id, "data-status": status, "data-reason": friend.reason || "" },
          h("span", { class: "friend", text: friend.friend }),
          h("span", { class: "badge", "data-status": status, text: STATUSES[status] || status }),
          h("span", { class: "why", text: friend.explanation }),
          h("time", { class: "when", datetime: when, text: day(when, lang) })
        )
      )
    );
    $("friends").dataset.state = "ready";
  }

  const referralCount = (n) => `${n} successful ${n == 1 ? "referral" : "referrals"}`;

  function boardRow(entry) {
    return h(
      "li",
      {
        "data-rank": entry.rank,
        "data-you": entry.is_you ? "true" : "false",
        "data-successful": entry.successful_referrals,
      },
      h("span", { class: "place", text: "#" + entry.rank }),
      h("span", { class: "name", text: entry.is_you ? `${entry.name} (you)` : entry.name }),
      h("span", { class: "score", text: entry.successful_referrals })
    );
  }

  async function loadBoard() {
    let board;
    try {
      board = await me("/leaderboard?limit=10");
    } catch (problem) {
      return failed(problem, "leaderboard", "rank");
    }
    const you = board.you;
    const rank = $("rank");
    rank.dataset.rank = you.rank;
    rank.textContent = you.successful_referrals
      ? `You are #${you.rank} with ${referralCount(you.successful_referrals)}.`
      : "Your first successful referral puts you on the board.";
    const rows = board.top.map(boardRow);
    // Outside the top: a gap, then the referrer's own row.
    if (!board.top.some((entry) => entry.is_you)) {
      rows.push(h("li", { class: "gap", "aria-hidden": "true", text: "…" }), boardRow(you));
    }
    $("board-list").replaceChildren(...rows);
    $("leaderboard").dataset.state = "ready";
  }

  async function saveName(value) {
    const status = $("name-status");
    const name = value.trim() || null;
    $("save-name").disabled = true;
    status.className = "status";
    status.textContent = "Saving…";
    try {
      const updated = await me("", { method: "PATCH", body: { leaderboard_name: name } });
      showName(updated.referrer.leaderboard_name);
      status.textContent = name
        ? `Saved: you appear as “${name}”.`
        : "Saved: you appear anonymously.";
      await loadBoard();
    } catch (problem) {
      if (problem.status == 401) return gone(problem.code);
      status.className = "status bad";
      status.textContent =
        problem.status == 422
          ? "That name cannot be used: at most 40 letters, digits, spaces or punctuation."
          : "The name could not be saved. Try again.";
    } finally {
      $("save-name").disabled = false;
    }
  }

  async function signOut() {
    try {
      await me("/session", { method: "DELETE" });
    } catch (problem) {
      if (problem.status != 401) return;
    }
    gone("signed_out");
  }

  if (!token) return gone("missing");
  share.addEventListener("referral-share:expired", (event) => gone(event.detail.code));
  share.addEventListener("referral-share:load", (event) => showMe(event.detail.me));
  // The widget tells its own failure (with a retry button); the rest of the page stays useful.
  share.addEventListener("referral-share:error", () => {
    $("loading").hidden = true;
    $("portal").hidden = false;
  });
  $("name-form").addEventListener("submit", (event) => {
    event.preventDefault();
    saveName($("leaderboard-name").value);
  });
  $("clear-name").addEventListener("click", () => saveName(""));
  $("signout").addEventListener("click", signOut);
  share.token = token;
  loadFriends();
  loadBoard();
})();

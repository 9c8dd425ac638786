// Referral ops dashboard, 4/5: the totals, the funnel and the tables, from the API's answers.
"use strict";

(() => {
  const { $, el, sparkline, formatCount, formatMoney, formatRate, formatRatio, isZero, humanDateTime } =
    window.ReferralDashboard;

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
      trueCost(summary),
    );
    $("funnel").replaceChildren(...nodes);
  }

  // Coupons issued in the range, what the orders that used them took off, and the rest.
  function trueCost(summary) {
    const currency = summary.currency;
    const money = (metric, label) =>
      el("div", {}, label, el("strong", { "data-metric": metric, "data-value": summary[metric], text: formatMoney(summary[metric], currency) }));
    return el("div", { class: "funnel-foot true-cost", "aria-label": "True reward cost" },
      money("reward_cost_issued", "Coupons issued"),
      money("reward_cost_redeemed", "Redeemed (true cost)"),
      money("reward_breakage", "Breakage"),
      el("div", {}, "Redemption rate", el("strong", { "data-metric": "reward_redemption_rate", "data-value": summary.reward_redemption_rate ?? "", text: formatRate(summary.reward_redemption_rate) })),
    );
  }

  function headRow(columns) {
    return el("thead", {}, el("tr", {}, columns.map(([label, numeric]) => el("th", { class: numeric ? "n" : null, scope: "col", text: label }))));
  }

  // On a phone a row is a card: each cell shows its column's name (data-label, via CSS), and
  // the cells named in `whole` take the card's whole width.
  function labelCells(body, columns, whole) {
    for (const row of body.rows) {
      [...row.cells].forEach((td, index) => {
        const [label] = columns[index] || [];
        if (whole.includes(index)) td.classList.add("whole");
        else if (label && label !== "#") td.dataset.label = label;
      });
    }
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
    labelCells(body, columns, [1]);
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
    labelCells(body, columns, [0]);
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
    labelCells(body, columns, [4]);
    table.replaceChildren(headRow(columns), body);
  }

  Object.assign(window.ReferralDashboard, { renderKpis, renderFunnel, renderReferrers, renderChannels, renderRecent });
})();

// Referral ops dashboard, 3/5: the SVG charts and sparklines, drawn here (no library).
"use strict";

(() => {
  const { $, el, svg, formatCount, formatMoney, formatRate, compactMoney, humanDate, coveredDays } =
    window.ReferralDashboard;

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
            class: spec.partial[index] ? "dot partial" : "dot",
            cx: x(index),
            cy: y(Number(value)),
            r: count > 45 ? 1.5 : 2.6,
            "data-series": series.key,
            "data-label": labels[index],
            "data-value": value,
            "data-partial": spec.partial[index] ? "true" : null,
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
              class: spec.partial[index] ? `${series.className} partial` : series.className,
              x: left.toFixed(1),
              y: y(number).toFixed(1),
              width: Math.max(barWidth - (groups > 1 ? 1 : 0), 0.5).toFixed(1),
              height: (y(0) - y(number)).toFixed(1),
              rx: Math.min(2, barWidth / 4).toFixed(1),
              "data-series": series.key,
              "data-label": labels[index],
              "data-value": value ?? "",
              "data-partial": spec.partial[index] ? "true" : null,
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
    const show = (event) => {
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
      tooltip.style.left = `${Math.max(8, left)}px`;
      tooltip.style.top = `${event.clientY + 14}px`;
    };
    // Pointer events: a mouse hovers, a finger taps or drags along the chart.
    hit.addEventListener("pointermove", show);
    hit.addEventListener("pointerdown", show);
    // A finger lifted also "leaves": a tapped tooltip stays until a tap elsewhere or a scroll.
    hit.addEventListener("pointerleave", (event) => {
      if (event.pointerType === "mouse") hideTooltip();
    });
    container.replaceChildren(root);
  }

  function hideTooltip() {
    for (const guide of document.querySelectorAll(".chart .guide")) guide.setAttribute("visibility", "hidden");
    $("tooltip").hidden = true;
  }

  function renderCharts(series) {
    if (!series) return;
    const currency = series.currency;
    const buckets = series.buckets;
    const labels = buckets.map((bucket) => bucket.label);
    const partial = buckets.map((bucket) => bucket.partial === true);
    const xLabel = (label) => humanDate(label, false);
    const xTitle = (index) => {
      const label = labels[index];
      const title = series.interval === "week"
        ? `Week of ${humanDate(label, true)}`
        : humanDate(label, series.interval === "day");
      return partial[index] ? `${title} (partial: ${coveredDays(buckets[index])})` : title;
    };
    // Say which buckets the range cuts (a weekly chart from a Wednesday starts with 5 days).
    const cut = buckets.filter((bucket) => bucket.partial === true).map(coveredDays);
    for (const note of document.querySelectorAll("[data-partial-note]")) {
      note.hidden = !cut.length;
      note.textContent = cut.length
        ? `Dashed: partial ${series.interval}${cut.length > 1 ? "s" : ""}; the range covers only ${cut.join(" and ")}.`
        : "";
    }
    drawChart($("chart-rate"), {
      name: "conversion_rate",
      type: "line",
      labels,
      series: [{ key: "conversion_rate", values: buckets.map((bucket) => bucket.conversion_rate) }],
      partial,
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
      partial,
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

  Object.assign(window.ReferralDashboard, { sparkline, drawChart, hideTooltip, renderCharts });
})();

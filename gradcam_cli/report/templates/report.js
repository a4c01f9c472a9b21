(function () {
  "use strict";
  // Cards are built from the JSON block with textContent and DOM properties only: no
  // string from a record is ever parsed as HTML.
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var records = data.records, PAGE = data.page_size, testMode = data.test_mode;
  var $ = function (id) { return document.getElementById(id); };
  var view = [], page = 0;

  records.forEach(function (r) {
    var words = [r.path];
    r.preds.forEach(function (p) { words.push(p.label); });
    if (r.truth) words.push(r.truth.label);
    r.hay = words.join("\n").toLowerCase();
    r.conf = r.top && typeof r.top.p === "number" ? r.top.p : -1;
  });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function percent(p) { return typeof p === "number" ? p.toFixed(3) : "?"; }

  function figure(src, caption, w, h, cls) {
    var f = el("figure", cls);
    if (src) {
      var a = el("a");
      a.href = src;
      a.target = "_blank";
      a.rel = "noopener";
      var img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = caption;
      if (w && h) { img.width = Math.round(160 * w / h); img.height = 160; }
      img.src = src;
      a.appendChild(img);
      f.appendChild(a);
    }
    f.appendChild(el("figcaption", null, caption));
    return f;
  }

  function card(r) {
    var c = el("article", "card" + (r.wrong ? " wrong" : "") + (r.status !== "ok" ? " error" : ""));
    c.dataset.index = r.i;
    var head = el("div", "head");
    head.appendChild(el("span", "name", r.name));
    if (r.path !== r.name) head.appendChild(el("span", "path", r.path));
    c.appendChild(head);
    if (r.status !== "ok") {
      c.appendChild(el("p", "message", r.error));
      return c;
    }
    if (r.truth) {
      var t = el("p", "truth");
      t.appendChild(el("span", null, "true: " + r.truth.label + " (" + r.truth.ci + ", ranked " + r.truth.rank + ")"));
      t.appendChild(document.createTextNode(" · "));
      var pred = r.top ? r.top.label + " (" + r.top.ci + ") " + percent(r.top.p) : "none";
      t.appendChild(el("span", r.wrong ? "bad" : "ok", "predicted: " + pred + (r.wrong ? " ✗" : " ✓")));
      c.appendChild(t);
    }
    var maps = el("div", "maps");
    if (r.src) maps.appendChild(figure(r.src, "original " + r.size[0] + "×" + r.size[1], r.size[0], r.size[1]));
    r.preds.forEach(function (p) {
      var caption = p.rank + ". " + p.label + " (" + p.ci + ") " + percent(p.p) + (p.method ? " · " + p.method : "");
      var guided = p.method === "guided";  // at the model input's size, not the original's shape
      maps.appendChild(figure(p.src, caption + (p.true ? " · true class" : ""), guided ? null : r.size[0],
                              guided ? null : r.size[1], p.true ? "true" : null));
    });
    if (r.grid) maps.appendChild(figure(r.grid, "grid", null, null, "picture"));
    if (r.gif) maps.appendChild(figure(r.gif, "GIF", null, null, "picture"));
    c.appendChild(maps);
    return c;
  }

  var sorters = {
    run: function (a, b) { return a.i - b.i; },
    "conf-desc": function (a, b) { return (b.conf - a.conf) || (a.i - b.i); },
    "conf-asc": function (a, b) {
      var x = a.conf < 0 ? 2 : a.conf, y = b.conf < 0 ? 2 : b.conf;  // failed images last
      return (x - y) || (a.i - b.i);
    },
    wrong: function (a, b) {  // misclassified (most confident mistakes first), then correct, then failed
      var rank = function (r) { return r.wrong ? 0 : (r.status === "ok" ? 1 : 2); };
      return (rank(a) - rank(b)) || (b.conf - a.conf) || (a.i - b.i);
    }
  };

  // The view's state (search, filters, sort, page) lives in the URL's fragment, written with
  // history.replaceState (no history entry, no reload; works from file://): a copied or reloaded
  // URL opens the same view. A query string (report.html?q=cat) is read too; the fragment wins.
  var controls = {q: "search", "class": "class-filter", show: "show", sort: "sort"};
  var defaults = {q: "", "class": "", show: "all", sort: $("sort").options[0].value};

  function readState() {
    var params = new URLSearchParams(location.search);
    new URLSearchParams(location.hash.slice(1)).forEach(function (value, key) { params.set(key, value); });
    return params;
  }

  function offered(box, value) {  // a select keeps only a value it offers
    return box.tagName !== "SELECT" || Array.prototype.some.call(box.options, function (o) { return o.value === value; });
  }

  function restore(params, keys) {  // the controls from a state (absent or unknown values: the default); the page
    (keys || Object.keys(controls)).forEach(function (key) {
      var box = $(controls[key]), value = params.has(key) ? params.get(key) : defaults[key];
      box.value = offered(box, value) ? value : defaults[key];
    });
    var number = parseInt(params.get("page"), 10);
    return number > 1 ? number - 1 : 0;
  }

  function saveState() {
    var params = new URLSearchParams();
    Object.keys(controls).forEach(function (key) {
      var value = $(controls[key]).value;
      if (value !== defaults[key]) params.set(key, value);
    });
    if (page > 0) params.set("page", String(page + 1));
    var url = new URL(location.href), text = params.toString();
    url.search = "";
    url.hash = text;
    var href = text ? url.href : url.href.split("#")[0];
    if (href === location.href) return;
    try { history.replaceState(history.state, "", href); } catch (e) { location.replace("#" + text); }
  }

  function apply(startPage) {
    var query = $("search").value.trim().toLowerCase();
    var cls = $("class-filter").value, show = $("show").value;
    view = records.filter(function (r) {
      if (query && r.hay.indexOf(query) < 0) return false;
      if (cls !== "" && !(r.top && String(r.top.ci) === cls)) return false;
      if (show === "wrong" && !r.wrong) return false;
      if (show === "right" && (r.wrong || !r.truth)) return false;
      if (show === "error" && r.status === "ok") return false;
      return true;
    });
    view.sort(sorters[$("sort").value] || sorters.run);
    page = startPage || 0;
    render();
  }

  function nothingText() {  // what the page says when no image is left to show
    var query = $("search").value.trim();
    var filtered = $("class-filter").value !== defaults["class"] || $("show").value !== defaults.show;
    if (!records.length) return "This run has no images.";
    if (!query) return "No images match the filters chosen.";
    return "No images match “" + query + "”" + (filtered ? " with the filters chosen." : ".");
  }

  function render() {
    var pages = Math.max(1, Math.ceil(view.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    var fragment = document.createDocumentFragment();
    view.slice(page * PAGE, (page + 1) * PAGE).forEach(function (r) { fragment.appendChild(card(r)); });
    $("cards").replaceChildren(fragment);
    $("empty").hidden = view.length > 0;
    $("empty").querySelector(".what").textContent = view.length ? "" : nothingText();
    $("empty").querySelector("button").hidden = !records.length;
    $("count").textContent = view.length + " of " + records.length + " images";
    $("page").textContent = "page " + (page + 1) + " of " + pages;
    $("prev").disabled = page === 0;
    $("next").disabled = page >= pages - 1;
    saveState();
  }

  var timer = null;
  $("search").addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 120); });
  ["class-filter", "show", "sort"].forEach(function (id) { $(id).addEventListener("change", function () { apply(); }); });
  $("prev").addEventListener("click", function () { page -= 1; render(); window.scrollTo(0, 0); });
  $("next").addEventListener("click", function () { page += 1; render(); window.scrollTo(0, 0); });
  $("empty").querySelector("button").addEventListener("click", function () {
    restore(new URLSearchParams(), ["q", "class", "show"]);  // the sort stays
    apply();
  });
  window.addEventListener("hashchange", function () { apply(restore(readState())); });  // an edited URL
  apply(restore(readState()));
  document.documentElement.dataset.ready = String(performance.now());
})();

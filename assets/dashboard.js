// runbookd dashboard: progressive enhancement only. Without this file every page reads and
// every form works (a post, then a redirect). With it: relative times keep ticking, the
// page follows GET /api/v1/events and re-renders <main> when something changed, and forms
// submit without a reload.
(function () {
  'use strict';

  function relative(iso) {
    var d = Math.round((Date.now() - Date.parse(iso)) / 1000);
    var future = d < 0;
    var n = Math.abs(d);
    if (n < 5) return 'just now';
    var t;
    if (n < 60) t = n + ' s';
    else if (n < 3600) t = Math.floor(n / 60) + ' min';
    else if (n < 86400) t = Math.floor(n / 3600) + ' h ' + Math.floor((n % 3600) / 60) + ' min';
    else t = Math.floor(n / 86400) + ' d ' + Math.floor((n % 86400) / 3600) + ' h';
    return future ? 'in ' + t : t + ' ago';
  }
  function tick() {
    document.querySelectorAll('time[datetime]').forEach(function (el) {
      el.textContent = relative(el.getAttribute('datetime'));
    });
  }
  setInterval(tick, 10000);

  function main() { return document.getElementById('main'); }

  // Someone typing in a form of <main>: a re-render would lose it, so it waits for blur.
  function typing() {
    var a = document.activeElement;
    return a && main() && main().contains(a) &&
      (a.tagName === 'TEXTAREA' || (a.tagName === 'INPUT' && a.type !== 'checkbox' && a.type !== 'hidden')) &&
      a.value !== '';
  }

  var deferred = false;

  // The field that has the focus, as a selector into a fresh <main>: its name inside the
  // nearest row that names what it belongs to (an approval, an incident, a run).
  function focusedField() {
    var a = document.activeElement;
    if (!a || !main() || !main().contains(a) || !a.name ||
        !(a.tagName === 'TEXTAREA' || a.tagName === 'INPUT')) return null;
    var sel = '[name="' + CSS.escape(a.name) + '"]';
    var row = a.parentElement;
    while (row && row !== main()) {
      for (var i = 0; i < row.attributes.length; i++) {
        var at = row.attributes[i];
        if (at.name.indexOf('data-') === 0 && at.value) {
          sel = '[' + at.name + '="' + CSS.escape(at.value) + '"] ' + sel;
          row = null;
          break;
        }
      }
      if (row) row = row.parentElement;
    }
    var start = null, end = null;
    try { start = a.selectionStart; end = a.selectionEnd; } catch (e) { /* no caret */ }
    return { sel: sel, value: a.value, start: start, end: end };
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    var fresh = doc.getElementById('main');
    if (!fresh || !main()) return;
    // A field focused but still empty does not hold the page back (typing() waits only for
    // one with text), yet its first keystrokes may be on their way: the fresh page gets the
    // focus and what is there, so nothing typed is lost.
    var kept = focusedField();
    main().replaceWith(fresh);
    if (kept) {
      var el = fresh.querySelector(kept.sel);
      if (el) {
        el.value = kept.value;
        el.focus();
        if (kept.start !== null) {
          try { el.setSelectionRange(kept.start, kept.end); } catch (e) { /* no caret */ }
        }
      }
    }
    document.title = doc.title;
    document.body.dataset.rendered = String(Date.now());
  }

  function refresh() {
    if (typing()) { deferred = true; return; }
    fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then(function (res) {
        if (res.redirected && new URL(res.url).pathname === '/login') { location.href = res.url; return null; }
        return res.ok ? res.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        // Typing began while the page was fetched: keep what was typed, re-read on blur.
        if (typing()) { deferred = true; return; }
        swap(html);
      })
      .catch(function () {});
  }
  document.addEventListener('focusout', function () {
    if (deferred) { deferred = false; setTimeout(refresh, 50); }
  });

  var timer = null;
  function soon() { clearTimeout(timer); timer = setTimeout(refresh, 150); }

  if (window.EventSource && document.body.dataset.live === 'on') {
    var badge = document.getElementById('live');
    var es = new EventSource('/api/v1/events');
    ['run', 'incident', 'approval', 'breaker', 'ready', 'resync'].forEach(function (k) {
      es.addEventListener(k, soon);
    });
    es.addEventListener('ready', function () {
      if (badge) { badge.hidden = false; badge.textContent = 'live'; badge.classList.remove('down'); }
      document.body.dataset.live = 'connected';
    });
    es.onerror = function () {
      if (badge) { badge.hidden = false; badge.textContent = 'reconnecting'; badge.classList.add('down'); }
    };
  }

  function flash(message) {
    var p = document.createElement('p');
    p.className = 'flash error';
    p.setAttribute('role', 'alert');
    p.textContent = message;
    main().prepend(p);
  }

  document.addEventListener('submit', function (e) {
    var form = e.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== 'post' || form.hasAttribute('data-plain')) return;
    e.preventDefault();
    var submitter = e.submitter || null;
    var action = (submitter && submitter.hasAttribute('formaction')) ? submitter.formAction : form.action;
    var body = new URLSearchParams(new FormData(form, submitter));
    form.querySelectorAll('button').forEach(function (b) { b.disabled = true; });
    fetch(action, { method: 'POST', body: body, credentials: 'same-origin', headers: { Accept: 'text/html' } })
      .then(function (res) {
        return res.text().then(function (html) {
          if (res.redirected && new URL(res.url).pathname === '/login') { location.href = res.url; return; }
          if (!res.ok) {
            var doc = new DOMParser().parseFromString(html, 'text/html');
            var m = doc.getElementById('error-message');
            form.querySelectorAll('button').forEach(function (b) { b.disabled = false; });
            flash(m ? m.textContent : ('failed: HTTP ' + res.status));
            return;
          }
          if (res.url && new URL(res.url).pathname !== location.pathname) history.pushState(null, '', res.url);
          swap(html);
        });
      })
      .catch(function (err) {
        form.querySelectorAll('button').forEach(function (b) { b.disabled = false; });
        flash('runbookd did not answer: ' + err);
      });
  });
  window.addEventListener('popstate', refresh);
})();

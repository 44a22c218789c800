"""HTML of the labeling app: the login, guidelines, labeling and admin pages.

Everything that came from a model, a samples file or an annotator is escaped here
(:func:`model_text`, :func:`esc`); bidirectional-override characters in model text are shown
as visible markers instead of being applied, so they cannot reorder the text around them.
Guidelines are markdown rendered without raw HTML (markdown-it's ``js-default`` preset:
``<script>`` shows as text, ``javascript:`` links stay text, images are off).
The only script is :data:`SCRIPT`, allowed by a per-page CSP nonce.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass

from fastapi.responses import HTMLResponse

from tether.feedback.store import Item, Progress

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
KEY_LETTERS = "abcdefgh"  # response keys; the action keys (t, x, s, u) stay free
BIDI_CONTROLS = {"\u202a": "LRE", "\u202b": "RLE", "\u202c": "PDF", "\u202d": "LRO", "\u202e": "RLO",
                 "\u2066": "LRI", "\u2067": "RLI", "\u2068": "FSI", "\u2069": "PDI"}

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;max-width:1400px;margin:0 auto;padding:.8em 1.2em;color:#222;line-height:1.45}
.top{display:flex;justify-content:space-between;align-items:center;gap:1em;flex-wrap:wrap;
border-bottom:1px solid #ddd;padding-bottom:.5em;margin-bottom:.8em}
.top form{display:inline;margin:0}.top nav{display:flex;gap:.5em;align-items:center;flex-wrap:wrap}
.layout{display:grid;grid-template-columns:minmax(0,1fr) minmax(14rem,22rem);gap:1.5em;align-items:start}
@media (max-width:900px){.layout{grid-template-columns:minmax(0,1fr)}}
.prompt,.text{white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word;unicode-bidi:plaintext}
.prompt{background:#f4f4f8;padding:.8em 1em;border-radius:8px}
.responses{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:1em;margin:1em 0}
.resp{min-width:0;border:2px solid #ccc;border-radius:8px;padding:.8em 1em}.resp h3{margin:0 0 .4em}
.text.collapsed{max-height:22em;overflow:hidden;-webkit-mask-image:linear-gradient(#000 75%,transparent);
mask-image:linear-gradient(#000 75%,transparent)}
.ctl{font:bold .75em monospace;color:#a40;background:#fde;border:1px solid #c88;border-radius:3px;padding:0 .2em}
.warn{color:#a40;font-size:.85em;margin:.2em 0}
button{font-size:1em;padding:.45em .9em;margin:.2em;cursor:pointer;border-radius:6px;border:1px solid #999;
background:#f7f7f7}button.primary{background:#1d5fa8;color:#fff;border-color:#1d5fa8}
button.armed{outline:3px solid #e90;outline-offset:2px}button:disabled{opacity:.5;cursor:default}
kbd{font:.85em monospace;border:1px solid #bbb;border-radius:3px;padding:0 .25em;background:#fff;color:#222}
button.primary kbd{background:#fff2;color:inherit;border-color:#fff8}h2.question{font-size:1.15em;margin:.2em 0 .6em}
.confirm{background:#fff6e0;border:1px solid #e90;padding:.5em 1em;border-radius:6px;font-weight:bold}
.progress{color:#555}.muted{color:#777;font-size:.9em}
.toast{position:fixed;bottom:1.5em;left:50%;transform:translateX(-50%);background:#223;color:#fff;
padding:.6em 1.2em;border-radius:6px;box-shadow:0 2px 8px #0004;animation:toast 6s forwards;z-index:9}
@keyframes toast{0%,85%{opacity:1}100%{opacity:0;visibility:hidden}}
.guidelines{position:sticky;top:.8em;max-height:calc(100vh - 2em);overflow:auto;background:#fafaf4;
border:1px solid #ddc;border-radius:8px;padding:.6em 1em;font-size:.92em}
.guidelines summary{font-weight:bold;cursor:pointer}
.ranking .resp{cursor:pointer}.resp.picked{border-color:#2a7;background:#f3fbf6}
.rank{color:#2a7;font-weight:bold;margin-left:.5em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
td:first-child,th:first-child{text-align:left;white-space:nowrap}td{white-space:nowrap}.error{color:#b00}
.extras{margin:.4em 0}.reading{max-width:52em}
"""

SCRIPT = """
(function () {
  'use strict';
  if (location.search) history.replaceState(null, '', location.pathname);
  var form = document.getElementById('label-form');
  var bar = document.getElementById('confirm');
  var armed = null;
  function disarm() {
    if (armed) armed.classList.remove('armed');
    armed = null;
    if (bar) bar.hidden = true;
  }
  function arm(button) {
    disarm();
    armed = button;
    button.classList.add('armed');
    if (bar) { bar.textContent = 'Press Enter to ' + button.dataset.does + ' \\u2014 Esc cancels.'; bar.hidden = false; }
  }
  Array.prototype.forEach.call(document.querySelectorAll('.text[data-slot]'), function (text) {
    var more = document.getElementById('more-' + text.dataset.slot);
    if (!more || text.scrollHeight <= 420) return;
    text.classList.add('collapsed');
    more.hidden = false;
    more.addEventListener('click', function (e) {
      e.stopPropagation();
      more.textContent = text.classList.toggle('collapsed') ? 'Show all' : 'Show less';
    });
  });
  var keyed = {};
  Array.prototype.forEach.call(document.querySelectorAll('[data-keys]'), function (button) {
    button.dataset.keys.split(' ').forEach(function (key) { keyed[key] = button; });
  });
  var rank = form && form.dataset.mode === 'rank' ? rankControls(parseInt(form.dataset.k, 10)) : null;
  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var tag = e.target.tagName;
    if (tag === 'TEXTAREA' || tag === 'INPUT' || tag === 'SELECT') {
      if (e.key === 'Enter') e.preventDefault();  // never submit a choice by accident
      return;
    }
    var key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (key === 'Escape') { disarm(); return; }
    if (key === 'Enter') {
      e.preventDefault();
      if (armed) { var button = armed; disarm(); button.click(); }
      else if (rank && rank.complete()) rank.submit.click();
      return;
    }
    if (rank && rank.handle(key)) { disarm(); e.preventDefault(); return; }
    if (keyed[key] && !keyed[key].disabled) { e.preventDefault(); arm(keyed[key]); }
  });
  function rankControls(k) {
    var ranked = [], submit = document.getElementById('submit-ranking');
    function render() {
      for (var s = 0; s < k; s++) {
        var place = ranked.indexOf(s);
        document.getElementById('rank-' + s).textContent = place < 0 ? '' : '#' + (place + 1);
        document.getElementById('resp-' + s).classList.toggle('picked', place >= 0);
      }
      document.getElementById('ranking').value = JSON.stringify(ranked);
      submit.disabled = ranked.length !== k;
    }
    function pick(s) {
      if (s >= k || ranked.indexOf(s) >= 0) return;
      ranked.push(s);
      if (ranked.length === k - 1) { for (var r = 0; r < k; r++) { if (ranked.indexOf(r) < 0) ranked.push(r); } }
      render();
    }
    function takeBack() { if (ranked.length === k) ranked.pop(); ranked.pop(); render(); }
    for (var s = 0; s < k; s++) {
      (function (slot) { document.getElementById('resp-' + slot).addEventListener('click', function () { pick(slot); }); })(s);
    }
    document.getElementById('unpick').addEventListener('click', takeBack);
    render();
    return {
      submit: submit,
      complete: function () { return ranked.length === k; },
      handle: function (key) {
        if (key === 'Backspace') { takeBack(); return true; }
        if (key.length !== 1) return false;
        var slot = '%s'.indexOf(key);
        if (slot < 0 && key >= '1' && key <= '9') slot = parseInt(key, 10) - 1;
        if (slot < 0) return false;
        pick(slot);
        return true;
      }
    };
  }
})();
""".replace("%s", KEY_LETTERS)

TOASTS = {
    "saved": "Saved.",
    "already": "Already labelled \u2014 your first answer was kept.",
    "skipped": "Skipped \u2014 it comes back at the end of your queue.",
    "undone": "Undone \u2014 here is that item again.",
    "too_late": "Nothing to undo (only your last answer, within the undo window).",
    "logged_out": "Logged out.",
}


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def model_text(text: str) -> str:
    """Escaped text with each bidirectional embedding/override/isolate shown as a visible marker, not applied."""
    out = html.escape(text, quote=True)
    for char, name in BIDI_CONTROLS.items():
        if char in out:
            out = out.replace(char, f"<span class='ctl' title='U+{ord(char):04X} ({name}), shown, not applied'>"
                                    f"{name}</span>")
    return out


def has_bidi_controls(text: str) -> bool:
    return any(char in text for char in BIDI_CONTROLS)


def render_markdown(text: str) -> str:
    """Guidelines markdown → HTML with no raw HTML passthrough (escaped), no images, safe links only."""
    from markdown_it import MarkdownIt

    return MarkdownIt("js-default").disable("image").render(text)


def slot_name(slot: int) -> str:
    return LETTERS[slot] if slot < len(LETTERS) else str(slot + 1)


def slot_keys(slot: int) -> str:
    """The keys that pick a shown response: its letter (A–H) and its number (1–9)."""
    keys = [KEY_LETTERS[slot]] if slot < len(KEY_LETTERS) else []
    return " ".join(keys + ([str(slot + 1)] if slot < 9 else []))


def page(title: str, body: str, nonce: str = "", status: int = 200):
    """A page with a strict Content-Security-Policy: only our own script (by nonce) may run."""
    script = f"<script nonce='{nonce}'>{SCRIPT}</script>" if nonce else ""
    document = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
                f"<style>{STYLE}</style></head><body>{body}{script}</body></html>")
    source = f"'nonce-{nonce}'" if nonce else "'none'"
    policy = (f"default-src 'none'; style-src 'unsafe-inline'; script-src {source}; form-action 'self'; "
              "base-uri 'none'; frame-ancestors 'none'")
    return HTMLResponse(document, status_code=status, headers={"Content-Security-Policy": policy})


def hidden(name: str, value: str) -> str:
    return f"<input type='hidden' name='{name}' value='{esc(value)}'>"


def post_button(action: str, csrf: str, label: str, element_id: str, keys: str = "", does: str = "",
                primary: bool = False) -> str:
    """A one-button form (logout, undo, start): a POST with the session's CSRF token."""
    data = f" data-keys='{keys}' data-does='{esc(does)}'" if keys else ""
    css = " class='primary'" if primary else ""
    return (f"<form method='post' action='{action}'>{hidden('csrf', csrf)}"
            f"<button type='submit' id='{element_id}'{css}{data}>{label}</button></form>")


def toast(done: str) -> str:
    message = TOASTS.get(done)
    return f"<div class='toast' id='toast' role='status'>{esc(message)}</div>" if message else ""


# --------------------------------------------------------------------------- annotator pages


@dataclass
class Header:
    name: str
    csrf: str
    progress: Progress
    can_undo: bool


def header(h: Header) -> str:
    p = h.progress
    skipped = (f" \u00b7 {p.skipped} skipped (they come back at the end)" if p.skipped else "")
    undo = (post_button("/undo", h.csrf, "\u21b6 Undo last (<kbd>u</kbd>)", "undo-last", "u",
                        "undo your last answer") if h.can_undo else "")
    return (f"<header class='top'><span class='progress' id='progress'>Logged in as <b><bdi>{model_text(h.name)}</bdi>"
            f"</b> \u2014 {p.done} of {p.total} labelled{skipped}</span><nav>{undo}"
            "<a href='/guidelines' id='guidelines-link'>Guidelines</a>"
            f"{post_button('/logout', h.csrf, 'Log out', 'logout')}</nav></header>")


def login_page(message: str = "", status: int = 200, done: str = "", admin: bool = False):
    note = f"<p class='error' id='login-error'>{esc(message)}</p>" if message else ""
    action, who, title = (("/admin/login", "The admin token", "tether labeling \u2014 admin") if admin
                          else ("/login", "Your token", "tether labeling"))
    body = (f"<h1>{title}</h1>{note}"
            f"<form method='post' action='{action}'><label>{who} <input name='token' id='token' type='password' "
            "autocomplete='current-password' autofocus></label> <button type='submit' class='primary' id='login'>"
            f"Log in</button></form>{toast(done)}")
    return page("Log in", body, status=status)


def guidelines_aside(guidelines_html: str) -> str:
    return (f"<aside class='guidelines' id='guidelines'><details open><summary>Guidelines</summary>{guidelines_html}"
            "</details></aside>")


def guidelines_page(h: Header, guidelines_html: str, first_time: bool, nonce: str):
    intro = ("<p><b>Welcome!</b> Please read the guidelines for this campaign before your first item. "
             "They stay beside every item.</p>" if first_time else "")
    start = post_button("/guidelines", h.csrf, "I have read the guidelines \u2014 start labelling", "start",
                        primary=True)
    body = (header(h) + f"<main class='reading'><h1>Guidelines</h1>{intro}<div class='guidelines-full' id='guidelines-full'>"
            f"{guidelines_html}</div>{start}</main>")
    return page("Guidelines", body, nonce)


def done_page(h: Header, guidelines_html: str, done: str, nonce: str):
    body = (header(h) + "<main class='layout'><section><h2 id='done'>All done \u2014 thank you!</h2>"
            "<p class='muted'>New items may be added later; log in again to check.</p></section>"
            f"{guidelines_aside(guidelines_html)}</main>{toast(done)}")
    return page("Done", body, nonce)


def response_card(slot: int, text: str) -> str:
    warning = ("<p class='warn'>Contains invisible text-direction controls, shown as markers.</p>"
               if has_bidi_controls(text) else "")
    return (f"<div class='resp' id='resp-{slot}'><h3>Response {slot_name(slot)} <span class='rank' id='rank-{slot}'>"
            f"</span></h3>{warning}<div class='text' dir='auto' data-slot='{slot}'>{model_text(text)}</div>"
            f"<button type='button' class='more' id='more-{slot}' hidden>Show all</button></div>")


def _choice_buttons(k: int, rank_mode: bool) -> str:
    if rank_mode:
        return ("<input type='hidden' name='ranking' id='ranking' value='[]'>"
                "<button type='submit' name='slot' value='rank' id='submit-ranking' class='primary' disabled>"
                "Submit ranking (<kbd>Enter</kbd>)</button>"
                "<button type='button' id='unpick'>Take back last pick (<kbd>Backspace</kbd>)</button>")
    return "".join(f"<button type='submit' name='slot' value='{slot}' id='choice-{slot}' class='primary' "
                   f"data-keys='{slot_keys(slot)}' data-does='submit \u201c{slot_name(slot)} is better\u201d'>"
                   f"{slot_name(slot)} is better (<kbd>{KEY_LETTERS[slot]}</kbd>)</button>" for slot in range(k))


def _action_buttons(k: int) -> str:
    every = "Both" if k == 2 else "All"
    actions = (("tie", "tie", "Tie", "t", "submit \u201ctie\u201d (equally good)"),
               ("both_bad", "both-bad", f"{every} bad", "x", f"submit \u201c{every.lower()} bad\u201d"),
               ("skip", "skip", "Skip", "s", "skip this item (it comes back at the end)"))
    return "".join(f"<button type='submit' name='slot' value='{value}' id='{element}' data-keys='{key}' "
                   f"data-does='{esc(does)}'>{label} (<kbd>{key}</kbd>)</button>"
                   for value, element, label, key, does in actions)


def item_page(h: Header, item: Item, order: list[int], guidelines_html: str, done: str, nonce: str):
    k = len(order)
    rank_mode = k > 2
    if rank_mode:
        question = (f"Rank the responses, best first: click them or press their letters (<kbd>a</kbd>\u2013"
                    f"<kbd>{KEY_LETTERS[min(k, len(KEY_LETTERS)) - 1]}</kbd>) in order; <kbd>Backspace</kbd> takes "
                    "back a pick, <kbd>Enter</kbd> submits.")
    else:
        question = ("Which response is better? Click, or press a key and confirm with <kbd>Enter</kbd>.")
    cards = "".join(response_card(slot, item.responses[index]) for slot, index in enumerate(order))
    form = (f"<form method='post' action='/label' id='label-form' data-k='{k}' "
            f"data-mode='{'rank' if rank_mode else 'pick'}'>"
            + hidden("item_id", item.item_id) + hidden("shown_order", json.dumps(order))
            + hidden("started", f"{time.time():.3f}") + hidden("csrf", h.csrf)
            + "<div class='choices'>" + _choice_buttons(k, rank_mode) + _action_buttons(k) + "</div>"
            + "<p class='extras'><label>Confidence <select name='confidence'><option value=''>\u2013</option>"
              "<option value='0.5'>unsure</option><option value='0.75'>fairly sure</option>"
              "<option value='1.0'>sure</option></select></label> "
              "<label>Why (optional) <input name='rationale' maxlength='500' size='40'></label></p></form>"
            + "<p class='confirm' id='confirm' role='status' hidden></p>")
    body = (header(h) + "<main class='layout'><section>"
            f"<h2 class='question'>{question}</h2><div class='prompt' id='prompt' dir='auto'>{model_text(item.prompt)}</div>"
            f"<div class='responses{' ranking' if rank_mode else ''}'>{cards}</div>{form}</section>"
            f"{guidelines_aside(guidelines_html)}</main>{toast(done)}")
    return page("Label", body, nonce)


def message_page(title: str, message: str, status: int):
    body = f"<h1>{esc(title)}</h1><p class='error' id='error'>{esc(message)}</p><p><a href='/'>Back to labelling</a></p>"
    return page(title, body, status=status)


# --------------------------------------------------------------------------- admin


def _shown(value, count: int, needed: int, digits: int = 3) -> str:
    if value is None:
        return (f"<span class='muted' title='needs {needed}'>\u2013 ({count} of {needed})</span>" if count < needed
                else "\u2013")
    return f"{value:.{digits}f} <span class='muted'>({count})</span>"


def _seconds(value) -> str:
    return "\u2013" if value is None else f"{value:.1f}"


NO_LABELS = {"ties": 0, "both_bad": 0, "median_seconds": None, "agreement_with_others": None, "overlap_items": 0,
             "gold_accuracy": None, "gold_questions": 0, "estimated_accuracy": None}


def admin_page(report: dict, progress: dict[str, Progress], total: int, unservable: list[tuple[str, str]],
               csrf: str | None, method: str):
    """Per annotator (everyone with a token or a label): progress, time per item, agreement, gold accuracy."""
    min_overlap, min_gold = report["min_overlap"], report["min_gold"]
    rows = []
    for name in sorted(set(progress) | set(report["annotators"])):
        a = report["annotators"].get(name, NO_LABELS)
        p = progress.get(name, Progress(0, 0, total))
        share = f"{p.done / total:.0%}" if total else "\u2013"
        rows.append(
            f"<tr><td><bdi>{model_text(name)}</bdi></td><td>{p.done} / {total} ({share})</td><td>{p.skipped}</td>"
            f"<td>{a['ties']}</td><td>{a['both_bad']}</td><td>{_seconds(a['median_seconds'])}</td>"
            f"<td>{_shown(a['agreement_with_others'], a['overlap_items'], min_overlap)}</td>"
            f"<td>{_shown(a['gold_accuracy'], a['gold_questions'], min_gold)}</td>"
            f"<td>{_shown(a['estimated_accuracy'], a['overlap_items'], min_overlap)}</td></tr>")
    fmt = lambda v: "\u2013" if v is None else f"{v:.3f}"  # noqa: E731
    bad = (f"<p class='error' id='unservable'>{len(unservable)} stored item(s) cannot be shown and are passed over: "
           + esc("; ".join(f"{i}: {p}" for i, p in unservable[:5])) + "</p>") if unservable else ""
    logout = post_button("/logout", csrf, "Log out", "logout") if csrf else ""
    body = (f"<header class='top'><h1>Annotators</h1><nav>{logout}</nav></header>"
            f"<p>{report['labels']} labels on {total} items; pairwise agreement {fmt(report['pairwise_agreement'])}, "
            f"Krippendorff's \u03b1 {fmt(report['krippendorff_alpha'])}.</p>{bad}"
            "<table id='annotators'><tr><th>annotator</th><th>labelled</th><th>skipped</th><th>ties</th>"
            "<th>both bad</th><th>median s / item</th><th>agreement with others (items)</th>"
            "<th>gold accuracy (questions)</th><th>estimated accuracy (items)</th></tr>"
            f"{''.join(rows)}</table>"
            f"<p class='muted'>Agreement and the Dawid\u2013Skene accuracy estimate are shown once an annotator shares "
            f"{min_overlap} items with others; gold accuracy after {min_gold} gold questions.</p>"
            f"<p><a href='/admin/export' id='export' download='preferences.jsonl'>Download preferences.jsonl</a> "
            f"<span class='muted'>(aggregated by {esc(method)}, as <code>tether label export</code>; each row carries "
            "its item_id)</span></p>")
    return page("Admin", body)

/* saferlhf annotate: keyboard shortcuts for a form marked data-shortcuts (the labelling and audit pages).
   The pages work without this file; it only picks the same radios and buttons a mouse would.
   1/2/3 more helpful A/B/tie, q/w/e more harmless A/B/tie, f/j the harm categories of A/B, z/x/c severity of A,
   b/n/m severity of B, Enter submit, s skip, Esc leave a field. Keys are ignored while typing in a text field and
   with Ctrl / Alt / Meta held. */
(function () {
  "use strict";
  var RADIOS = {
    "1": ["helpful", "0"], "2": ["helpful", "1"], "3": ["helpful", "tie"],
    "q": ["harmless", "0"], "w": ["harmless", "1"], "e": ["harmless", "tie"],
    "z": ["severity_0", "1"], "x": ["severity_0", "2"], "c": ["severity_0", "3"],
    "b": ["severity_1", "1"], "n": ["severity_1", "2"], "m": ["severity_1", "3"]
  };
  var CATEGORIES = { "f": "0", "j": "1" };

  function typing(el) {
    if (!el || !el.tagName) return false;
    if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    if (el.tagName !== "INPUT") return false;
    return ["checkbox", "radio", "button", "submit", "reset", "hidden"].indexOf(el.type) < 0;
  }

  function pick(form, name, value) {
    var inputs = form.querySelectorAll("input[type=radio]");
    for (var i = 0; i < inputs.length; i++) {
      var input = inputs[i];
      if (input.name === name && input.value === value && !input.disabled) {
        input.checked = true;
        input.dispatchEvent(new Event("change", { bubbles: true }));
        var box = input.closest("fieldset");
        if (box) { box.classList.remove("picked"); void box.offsetWidth; box.classList.add("picked"); }
        return true;
      }
    }
    return false;
  }

  function press(form, selector) {
    var button = form.querySelector(selector);
    if (!button) return false;
    if (form.requestSubmit) form.requestSubmit(button); else button.click();
    return true;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("form[data-shortcuts]");
    if (!form) return;
    document.addEventListener("keydown", function (ev) {
      if (ev.defaultPrevented || ev.ctrlKey || ev.altKey || ev.metaKey || ev.isComposing) return;
      var target = ev.target;
      if (typing(target)) return;
      var key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
      var done = false;
      if (key === "Enter") {
        if (target && ["BUTTON", "A", "SUMMARY"].indexOf(target.tagName) >= 0) return;  // the focused control acts
        done = press(form, "[data-submit]");
      } else if (key === "Escape") {
        if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
        done = true;
      } else if (key === "s") {
        done = press(form, "[data-skip]");
      } else if (RADIOS.hasOwnProperty(key)) {
        done = pick(form, RADIOS[key][0], RADIOS[key][1]);
      } else if (CATEGORIES.hasOwnProperty(key)) {
        var first = form.querySelector('[data-categories="' + CATEGORIES[key] + '"] input[type=checkbox]');
        if (first) { first.focus(); done = true; }
      }
      if (done) ev.preventDefault();
    });
  });
})();

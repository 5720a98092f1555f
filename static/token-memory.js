// The token of the demo page, remembered for the browser tab's session.
//
// sessionStorage, not localStorage: it lasts while the tab is open (reloads
// included), is not shared with other tabs and is gone when the tab closes,
// so a teacher pastes the token once per visit and a shared computer does not
// keep it. Like anything a page's script can read, a script injected into the
// page could read it; the page's Content-Security-Policy allows no script
// but its own (docs/client.md, "The token"). "Forget the token" clears it at
// once.

const KEY = "study-time-token";

function store(value) {
  try {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  } catch {
    // storage disabled: the token is simply not remembered
  }
}

/**
 * Fill `input` with the remembered token, remember what is typed, and show
 * `panel` (with its `forget` button) while a token is remembered; `changed()`
 * runs after Forget.
 */
export function rememberToken(input, panel, forget, changed) {
  try {
    const saved = sessionStorage.getItem(KEY);
    if (saved && !input.value) input.value = saved;
  } catch {
    // storage disabled
  }
  const show = () => {
    panel.hidden = !input.value;
  };
  input.addEventListener("input", () => {
    store(input.value);
    show();
  });
  forget.addEventListener("click", () => {
    store("");
    input.value = "";
    show();
    changed();
    input.focus();
  });
  show();
}

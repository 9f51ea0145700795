// Buttons that act through the API: each is disabled below the role its
// route needs, shows the server's error in the banner, and redraws what it
// changed.

import { gate } from "./session.js";
import { flash, h, showError, twoStep } from "./dom.js";

/**
 * Runs `act` (an API call that resolves to the message to show), shows
 * its error if it fails, then redraws with `refresh(true)`.
 */
export async function perform(act, refresh) {
  try {
    const message = await act();
    if (message) flash(message, "info");
  } catch (e) {
    showError(e);
  }
  if (!refresh) return;
  try {
    await refresh(true);
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
  }
}

/** A button for callers of `role` or above that performs `act`. */
export function actionButton(attrs, label, role, act, refresh) {
  const btn = gate(h("button", { type: "button", ...attrs }, label), role);
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    await perform(act, refresh);
  });
  return btn;
}

/** A button that must be pressed twice (a deletion, a revocation), for callers of `role` or above. */
export function confirmButton(attrs, label, role, act, refresh) {
  return gate(
    twoStep(attrs, label, () => perform(act, refresh)),
    role,
  );
}

document.addEventListener("DOMContentLoaded", () => {
  document.body.insertAdjacentHTML("beforeend", "<p>app.3f9a1c2b.js loaded (immutable)</p>");
});

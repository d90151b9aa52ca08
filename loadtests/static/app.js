// Demo script for the webcluster load tests: fetches an item from the JSON API on load.
"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  const id = 1 + Math.floor(Math.random() * 1000);
  try {
    const response = await fetch(`/api/items/${id}`);
    const item = await response.json();
    const note = document.createElement("p");
    note.textContent = `Featured: ${item.name} (${(item.price_cents / 100).toFixed(2)})`;
    document.body.appendChild(note);
  } catch (err) {
    console.warn("item fetch failed", err);
  }
});

// sluice web view: progressive touches only; every page works without this script.
document.addEventListener("DOMContentLoaded", function () {
  // "select all" on the failed batches.
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('input[name="batch"][form="replay-selection"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }
  // A second confirmation before a drop (the form's checkbox is the first).
  document.querySelectorAll("button[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
});

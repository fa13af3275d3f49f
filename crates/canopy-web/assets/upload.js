// Drag and drop onto the console's upload form: files dropped on the form become the file
// input's files, as if chosen in the file dialog. A progressive enhancement: without this
// script the form works the same (served from this server only; no inline script).
"use strict";
(function () {
  var form = document.getElementById("upload-form");
  var input = document.getElementById("files");
  if (!form || !input) {
    return;
  }
  form.classList.add("droppable");
  var hint = document.getElementById("dropped");
  if (hint) {
    hint.textContent = "Or drop the files on this form.";
  }
  function over(e) {
    e.preventDefault();
    form.classList.add("dragging");
  }
  form.addEventListener("dragenter", over);
  form.addEventListener("dragover", over);
  form.addEventListener("dragleave", function () {
    form.classList.remove("dragging");
  });
  form.addEventListener("drop", function (e) {
    e.preventDefault();
    form.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files.length > 0) {
      input.files = e.dataTransfer.files;
      var shown = document.getElementById("dropped");
      if (shown) {
        var names = [];
        for (var i = 0; i < input.files.length; i++) {
          names.push(input.files[i].name);
        }
        shown.textContent = names.length + " file(s): " + names.join(", ");
      }
    }
  });
})();

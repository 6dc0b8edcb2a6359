// Multi-file upload: each image is posted to POST /api/works/ (fields `image`, `caption`) with its own
// progress bar. A `name.txt` dropped with `name.png` becomes its caption. One upload runs at a time
// (the embedded SQLite database takes one writer at a time); each file still shows its own progress.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) { return; }
  var endpoint = form.getAttribute("data-endpoint");
  var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var list = document.getElementById("upload-list");
  var summary = document.getElementById("upload-summary");
  var zone = document.getElementById("drop-zone");
  var input = document.getElementById("file-input");
  var defaultCaption = document.getElementById("default-caption");
  var msg = function (name) { return list.getAttribute("data-msg-" + name); };
  var queue = [];
  var running = 0;
  var counts = { created: 0, duplicate: 0, refused: 0 };

  function stem(name) { var dot = name.lastIndexOf("."); return dot > 0 ? name.slice(0, dot) : name; }

  function readText(file) {
    return new Promise(function (resolve) {
      var reader = new FileReader();
      reader.onload = function () { resolve(String(reader.result).trim()); };
      reader.onerror = function () { resolve(""); };
      reader.readAsText(file);
    });
  }

  function addFiles(files) {
    var captions = {};
    var images = [];
    var reads = [];
    Array.prototype.forEach.call(files, function (file) {
      if (/\.txt$/i.test(file.name)) {
        reads.push(readText(file).then(function (text) { captions[stem(file.name)] = text; }));
      } else {
        images.push(file);
      }
    });
    Promise.all(reads).then(function () {
      images.sort(function (a, b) { return a.name < b.name ? -1 : 1; });
      images.forEach(function (file) {
        var caption = captions[stem(file.name)];
        queue.push({ file: file, caption: caption !== undefined ? caption : defaultCaption.value, row: addRow(file) });
      });
      pump();
    });
  }

  function addRow(file) {
    var row = document.createElement("li");
    row.className = "upload-item";
    var name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    var status = document.createElement("span");
    status.className = "upload-status";
    status.textContent = msg("waiting");
    row.appendChild(name);
    row.appendChild(bar);
    row.appendChild(status);
    list.appendChild(row);
    return row;
  }

  function finish(item, kind, text, warnings) {
    item.row.classList.add("upload-" + kind);
    var status = item.row.querySelector(".upload-status");
    status.textContent = text;
    // One line each: joined into one run of text they read as one sentence, wrongly so in Japanese.
    (warnings || []).forEach(function (warning) {
      var line = document.createElement("span");
      line.className = "warning upload-warning";
      line.textContent = warning;
      status.appendChild(line);
    });
    item.row.querySelector("progress").value = 100;
    counts[kind] += 1;
    running -= 1;
    pump();
  }

  function send(item) {
    running += 1;
    var data = new FormData();
    data.append("image", item.file, item.file.name);
    data.append("caption", item.caption || "");
    var xhr = new XMLHttpRequest();
    xhr.open("POST", endpoint);
    xhr.setRequestHeader("X-CSRFToken", token);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) { item.row.querySelector("progress").value = Math.round((event.loaded / event.total) * 95); }
    });
    xhr.addEventListener("load", function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = {}; }
      if (xhr.status === 201) {
        finish(item, "created", msg("uploaded") + " (#" + body.id + ")", body.warnings);
      } else if (xhr.status === 409) {
        finish(item, "duplicate", msg("duplicate") + ": " + (body.error ? body.error.message : ""));
      } else {
        finish(item, "refused", msg("failed") + ": " + (body.error ? body.error.message : xhr.status));
      }
    });
    xhr.addEventListener("error", function () { finish(item, "refused", msg("failed")); });
    xhr.send(data);
  }

  function pump() {
    while (running < 1 && queue.length) { send(queue.shift()); }
    if (!running && !queue.length && list.children.length) {
      summary.textContent = msg("done").replace(/\{(\w+)\}/g, function (whole, name) { return counts[name]; });
      summary.setAttribute("data-done", "true");
    }
  }

  input.addEventListener("change", function () { addFiles(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (event) { addFiles(event.dataTransfer.files); });
  zone.addEventListener("keydown", function (event) {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
})();

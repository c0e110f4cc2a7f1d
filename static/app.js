// Upload page: pick or drop X-rays. One file: preview it, POST it to /predict, show the result.
// Several: POST them to /predict/batch in chunks within the server's limits and show a table,
// one row per file in file order (sortable by P(Covid), downloadable as CSV, a heatmap per row).
// Without JavaScript the form posts to "/" and the server renders the result of the first file.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  var input = document.getElementById("file-input");
  var dropzone = document.getElementById("dropzone");
  var preview = document.getElementById("preview");
  var button = document.getElementById("classify");
  var statusEl = document.getElementById("status");
  var errorEl = document.getElementById("error");
  var resultEl = document.getElementById("result");
  var keyInput = document.getElementById("api-key");
  var heatmap = document.getElementById("heatmap");
  var heatmapControls = document.getElementById("heatmap-controls");
  var toggle = document.getElementById("heatmap-toggle");
  var meaning = document.getElementById("probability-meaning");
  var MB = 1024 * 1024;
  var limits = {
    fileBytes: parseFloat(form.dataset.maxUploadMb) * MB,
    batchFiles: parseInt(form.dataset.batchMaxFiles, 10) || 1,
    batchBytes: parseFloat(form.dataset.batchMaxMb) * MB
  };
  // The predict CLI's columns (python -m model_training.predict), so both CSVs read the same.
  var CSV_COLUMNS = ["file", "label", "probability_covid", "probability_normal", "threshold",
                     "operating_point", "in_distribution", "error"];
  var PART_OVERHEAD = 1024;  // multipart headers per file, counted against BATCH_MAX_MB
  var previewUrl = null;
  var resultFile = null;   // the file the shown result belongs to
  var heatmapFile = null;  // the file the loaded heatmap belongs to
  var rows = [];           // the batch table's rows, in file order
  var thumbUrls = [];

  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = false;
  }

  function clearError() {
    errorEl.textContent = "";
    errorEl.hidden = true;
  }

  function showPreview(file) {
    if (previewUrl) { URL.revokeObjectURL(previewUrl); }
    previewUrl = URL.createObjectURL(file); // stays in the browser, never uploaded until Classify
    preview.src = previewUrl;
    preview.hidden = false;
  }

  // Browsers cannot show DICOM: hide the broken preview; the heatmap then stands alone.
  preview.addEventListener("error", function () { preview.hidden = true; });

  function hideHeatmap() {
    heatmap.hidden = true;
  }

  function showHeatmap(data) {
    heatmap.src = "data:image/png;base64," + data.heatmap_png;
    heatmap.classList.toggle("standalone", preview.hidden);
    setText("explained-class", data.explained_class);
    heatmap.hidden = false;
  }

  function setText(id, text) { document.getElementById(id).textContent = text; }

  function meaningText(data) {
    return data.calibrated ? meaning.dataset.calibratedText : meaning.dataset.rawText;
  }

  function pointName(data) { return (data.operating_point || "").replace(/_/g, " "); }

  function showResult(data) {
    setText("label", data.label);
    setText("prob-covid", data.probabilities.Covid.toFixed(3));
    setText("prob-normal", data.probabilities.Normal.toFixed(3));
    document.getElementById("bar-covid").value = data.probabilities.Covid;
    document.getElementById("bar-normal").value = data.probabilities.Normal;
    setText("threshold", data.threshold.toFixed(3));
    setText("operating-point-used", pointName(data));
    meaning.textContent = meaningText(data);
    setText("model-name", form.dataset.modelName || data.model.name);
    setText("model-sha", data.model.sha256.slice(0, 12));
    setText("inference-ms", data.inference_ms.toFixed(1));
    showShiftWarning(data.warnings || []);
    resultEl.hidden = false;
    heatmapControls.hidden = false;
  }

  // The input gate's domain-shift signal: the X-ray is unlike the training data.
  function showShiftWarning(warnings) {
    var shift = warnings.filter(function (w) { return w.code === "out_of_distribution"; })[0];
    var el = document.getElementById("shift-warning");
    el.hidden = !shift;
    if (!shift) { return; }
    setText("shift-message", shift.message);
    setText("shift-score", shift.score.toFixed(2));
    setText("shift-threshold", shift.threshold.toFixed(2));
  }

  function chosenFiles() { return input.files ? Array.prototype.slice.call(input.files) : []; }

  input.addEventListener("change", function () {
    clearError();
    hideHeatmap();
    heatmapFile = null;
    var files = chosenFiles();
    if (files.length === 1) {
      showPreview(files[0]);
    } else {
      preview.hidden = true;  // several files: each gets a thumbnail in the table instead
      if (files.length > 1) { statusEl.textContent = files.length + " files chosen: press Classify."; }
    }
  });

  ["dragenter", "dragover"].forEach(function (name) {
    dropzone.addEventListener(name, function (event) {
      event.preventDefault();
      dropzone.classList.add("dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropzone.addEventListener(name, function () { dropzone.classList.remove("dragover"); });
  });
  dropzone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change"));
    }
  });

  function authHeaders() {
    var headers = {};
    if (keyInput) { headers["X-API-Key"] = keyInput.value; }
    return headers;
  }

  function withOperatingPoint(body) {
    var point = document.getElementById("operating-point");
    if (point) { body.append("operating_point", point.value); }
    return body;
  }

  // POST a form; resolve with the JSON answer, reject with the API's message.
  function post(url, body) {
    return fetch(url, { method: "POST", body: body, headers: authHeaders() })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) {
            var message = (data.error && data.error.message) || ("Request failed (" + response.status + ").");
            throw new Error(message);
          }
          return data;
        });
      });
  }

  function explainBody(file) {
    var body = new FormData();
    body.append("file", file);
    return withOperatingPoint(body);
  }

  // One file to /predict (with ?explain=true for the Grad-CAM overlay).
  function classify(file, explain, busyText) {
    button.disabled = true;
    toggle.disabled = true;
    statusEl.textContent = busyText;
    return post(explain ? "/predict?explain=true" : "/predict", explainBody(file))
      .then(function (data) {
        showResult(data);
        resultFile = file;
        if (data.heatmap_png) {
          heatmapFile = file;
          showHeatmap(data);
        }
      })
      .catch(function (err) { resultEl.hidden = true; hideHeatmap(); showError(err.message); })
      .finally(function () { button.disabled = false; toggle.disabled = false; statusEl.textContent = ""; });
  }

  // ---- several files: /predict/batch in chunks, one table row per file -------------------

  // Consecutive chunks within BATCH_MAX_FILES and BATCH_MAX_MB; a file over MAX_UPLOAD_MB is
  // refused here (the server would refuse it too) and is in no chunk.
  function chunksOf(items) {
    var chunks = [], current = [], bytes = 0;
    items.forEach(function (row) {
      if (row.file.size > limits.fileBytes) {
        row.error = { code: "payload_too_large",
                      message: "The file is larger than the " + form.dataset.maxUploadMb + " MB limit (MAX_UPLOAD_MB)." };
        return;
      }
      var size = row.file.size + PART_OVERHEAD;
      if (current.length && (current.length >= limits.batchFiles || bytes + size > limits.batchBytes)) {
        chunks.push(current);
        current = [];
        bytes = 0;
      }
      current.push(row);
      bytes += size;
    });
    if (current.length) { chunks.push(current); }
    return chunks;
  }

  function cell(tr, content, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    if (content instanceof Node) { td.appendChild(content); } else { td.textContent = content; }
    tr.appendChild(td);
    return td;
  }

  function thumbnail(row) {
    var url = URL.createObjectURL(row.file);
    thumbUrls.push(url);
    var img = document.createElement("img");
    img.className = "thumb";
    img.alt = "Thumbnail of " + row.file.name;
    img.src = url;
    img.addEventListener("error", function () {  // DICOM: no preview in a browser
      var span = document.createElement("span");
      span.className = "hint";
      span.textContent = "no preview";
      img.replaceWith(span);
    });
    return img;
  }

  function buildRow(row) {
    var tr = document.createElement("tr");
    tr.dataset.index = String(row.index);
    cell(tr, String(row.index + 1));
    cell(tr, thumbnail(row));
    cell(tr, row.file.name, "file-name");
    row.labelCell = cell(tr, "waiting", "label-cell");
    row.probCell = cell(tr, "", "prob-cell");
    row.noteCell = cell(tr, "", "note-cell");
    row.heatmapCell = cell(tr, "", "heatmap-cell");
    row.tr = tr;
    return tr;
  }

  function warningText(warnings) {
    return (warnings || []).map(function (w) { return w.message; }).join(" ");
  }

  function fillRow(row) {
    var tr = row.tr;
    if (row.error) {
      tr.dataset.status = "refused";
      row.labelCell.textContent = "Refused";
      row.probCell.textContent = "—";
      row.noteCell.textContent = row.error.message;
      row.noteCell.className = "note-cell error";
      return;
    }
    var data = row.answer;
    tr.dataset.status = "classified";
    row.labelCell.textContent = data.label;
    row.probCell.textContent = data.probabilities.Covid.toFixed(4);
    row.noteCell.textContent = warningText(data.warnings);
    row.noteCell.className = "note-cell" + (data.warnings && data.warnings.length ? " warning-text" : "");
    var explain = document.createElement("button");
    explain.type = "button";
    explain.className = "row-heatmap";
    explain.textContent = "Show heatmap";
    explain.setAttribute("aria-label", "Show heatmap for " + row.file.name);
    explain.addEventListener("click", function () { toggleRowHeatmap(row, explain); });
    row.heatmapCell.appendChild(explain);
  }

  // One /predict?explain=true for this row's file, the first time it is asked for.
  function toggleRowHeatmap(row, explain) {
    if (row.heatmapImg) {
      row.heatmapImg.hidden = !row.heatmapImg.hidden;
      explain.textContent = row.heatmapImg.hidden ? "Show heatmap" : "Hide heatmap";
      return;
    }
    explain.disabled = true;
    explain.textContent = "Computing...";
    post("/predict?explain=true", explainBody(row.file))
      .then(function (data) {
        var img = document.createElement("img");
        img.className = "row-heatmap-img";
        img.alt = "Grad-CAM heatmap for " + row.file.name + ": where the model looked for " + data.explained_class;
        img.src = "data:image/png;base64," + data.heatmap_png;
        row.heatmapImg = img;
        row.heatmapCell.appendChild(img);
        explain.textContent = "Hide heatmap";
      })
      .catch(function (err) { explain.textContent = "Show heatmap"; showError(err.message); })
      .finally(function () { explain.disabled = false; });
  }

  function setProgress(done, total) {
    var bar = document.getElementById("batch-progress");
    bar.max = total;
    bar.value = done;
    setText("batch-progress-text", done < total ? ("Classified " + done + " of " + total + " files...")
                                                : ("All " + total + " files done."));
  }

  function noteFor(answer) {
    setText("batch-meaning", meaningText(answer));
    setText("batch-operating-point", pointName(answer));
    setText("batch-threshold", answer.threshold.toFixed(3));
    document.getElementById("batch-note").hidden = false;
  }

  function sendChunk(chunk) {
    var body = new FormData();
    chunk.forEach(function (row) { body.append("files", row.file, row.file.name); });
    return post("/predict/batch", withOperatingPoint(body))
      .then(function (data) {
        chunk.forEach(function (row, i) {
          var item = data.results[i];
          if (item.error) { row.error = item.error; } else { row.answer = item; noteFor(item); }
        });
      })
      .catch(function (err) {  // the whole request failed (key, limits, server): say so on each row
        chunk.forEach(function (row) { row.error = { code: "request_failed", message: err.message }; });
      })
      .then(function () { chunk.forEach(fillRow); });
  }

  function resetTable() {
    thumbUrls.forEach(function (url) { URL.revokeObjectURL(url); });
    thumbUrls = [];
    rows = [];
    document.getElementById("batch-rows").textContent = "";
    document.getElementById("batch-note").hidden = true;
    document.getElementById("download-csv").disabled = true;
    sortState = "none";
    document.getElementById("sort-header").setAttribute("aria-sort", "none");
    setText("sort-mark", " ↕");
  }

  function classifyMany(files) {
    resultEl.hidden = true;
    hideHeatmap();
    resetTable();
    var tbody = document.getElementById("batch-rows");
    rows = files.map(function (file, index) { return { file: file, index: index }; });
    rows.forEach(function (row) { tbody.appendChild(buildRow(row)); });
    setText("batch-count", String(rows.length));
    document.getElementById("batch").hidden = false;
    var chunks = chunksOf(rows);
    rows.forEach(function (row) { if (row.error) { fillRow(row); } });
    var done = rows.length - chunks.reduce(function (n, c) { return n + c.length; }, 0);
    setProgress(done, rows.length);
    button.disabled = true;
    statusEl.textContent = "Classifying " + rows.length + " files...";
    // One request at a time: the server batches each chunk into one forward pass.
    return chunks.reduce(function (previous, chunk) {
      return previous.then(function () {
        return sendChunk(chunk).then(function () { done += chunk.length; setProgress(done, rows.length); });
      });
    }, Promise.resolve()).finally(function () {
      button.disabled = false;
      statusEl.textContent = "";
      document.getElementById("download-csv").disabled = false;
    });
  }

  // Sort by P(Covid): descending, then ascending, then back to file order. Refusals go last.
  var sortState = "none";
  document.getElementById("sort-covid").addEventListener("click", function () {
    sortState = { none: "descending", descending: "ascending", ascending: "none" }[sortState];
    document.getElementById("sort-header").setAttribute("aria-sort", sortState);
    setText("sort-mark", { none: " ↕", descending: " ▼", ascending: " ▲" }[sortState]);
    var ordered = rows.slice();
    if (sortState !== "none") {
      var sign = sortState === "descending" ? -1 : 1;
      ordered.sort(function (a, b) {
        var pa = a.answer ? a.answer.probabilities.Covid : null;
        var pb = b.answer ? b.answer.probabilities.Covid : null;
        if (pa === null || pb === null) { return (pa === null) - (pb === null) || a.index - b.index; }
        return sign * (pa - pb) || a.index - b.index;
      });
    }
    var tbody = document.getElementById("batch-rows");
    ordered.forEach(function (row) { tbody.appendChild(row.tr); });
  });

  // ---- CSV, made here from the answers (nothing is stored on the server) ------------------

  function csvField(value) {
    var text = value === null || value === undefined ? "" : String(value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function csvRow(row) {
    if (row.error) {
      return { file: row.file.name, error: row.error.code + ": " + row.error.message };
    }
    var a = row.answer;
    return {
      file: row.file.name, label: a.label,
      probability_covid: a.probabilities.Covid.toFixed(6), probability_normal: a.probabilities.Normal.toFixed(6),
      threshold: String(Number(a.threshold.toPrecision(6))), operating_point: a.operating_point || "",
      in_distribution: a.in_distribution === null || a.in_distribution === undefined ? "" : String(a.in_distribution)
    };
  }

  function csvText() {
    var lines = [CSV_COLUMNS.join(",")];
    rows.forEach(function (row) {
      var values = csvRow(row);
      lines.push(CSV_COLUMNS.map(function (name) { return csvField(values[name]); }).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }

  document.getElementById("download-csv").addEventListener("click", function () {
    var url = URL.createObjectURL(new Blob([csvText()], { type: "text/csv" }));
    var link = document.createElement("a");
    link.href = url;
    link.download = "cxr-results.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  });

  // ---- the form ---------------------------------------------------------------------------

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearError();
    var files = chosenFiles();
    if (!files.length) { showError("Choose an X-ray image first."); return; }
    if (files.length > 1) { classifyMany(files); return; }
    document.getElementById("batch").hidden = true;
    classify(files[0], toggle.checked,
             toggle.checked ? "Classifying and computing the heatmap..." : "Classifying...");
  });

  toggle.addEventListener("change", function () {
    if (!toggle.checked) { hideHeatmap(); return; }
    var file = input.files && input.files[0];
    if (!file) { return; }
    if (heatmapFile === file) {
      heatmap.classList.toggle("standalone", preview.hidden);
      heatmap.hidden = false;
    } else if (resultFile === file) {
      clearError();
      classify(file, true, "Computing the heatmap...");
    }
  });
}());

// Upload page: pick or drop an X-ray, preview it, POST it to /predict, show the result.
// Without JavaScript the form posts to "/" and the server renders the same result block.
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
  var previewUrl = null;
  var resultFile = null;   // the file the shown result belongs to
  var heatmapFile = null;  // the file the loaded heatmap belongs to

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

  function showResult(data) {
    setText("label", data.label);
    setText("prob-covid", data.probabilities.Covid.toFixed(3));
    setText("prob-normal", data.probabilities.Normal.toFixed(3));
    document.getElementById("bar-covid").value = data.probabilities.Covid;
    document.getElementById("bar-normal").value = data.probabilities.Normal;
    setText("threshold", data.threshold.toFixed(3));
    setText("operating-point-used", (data.operating_point || "").replace(/_/g, " "));
    var meaning = document.getElementById("probability-meaning");
    meaning.textContent = data.calibrated ? meaning.dataset.calibratedText : meaning.dataset.rawText;
    setText("model-name", data.model.name);
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

  input.addEventListener("change", function () {
    clearError();
    hideHeatmap();
    heatmapFile = null;
    if (input.files && input.files[0]) { showPreview(input.files[0]); }
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

  // POST the chosen file to /predict (with ?explain=true for the Grad-CAM overlay).
  function classify(file, explain, busyText) {
    var body = new FormData();
    body.append("file", file);
    var point = document.getElementById("operating-point");
    if (point) { body.append("operating_point", point.value); }
    var headers = {};
    if (keyInput) { headers["X-API-Key"] = keyInput.value; }
    button.disabled = true;
    toggle.disabled = true;
    statusEl.textContent = busyText;
    return fetch(explain ? "/predict?explain=true" : "/predict",
                 { method: "POST", body: body, headers: headers })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) {
            var message = (data.error && data.error.message) || ("Request failed (" + response.status + ").");
            throw new Error(message);
          }
          return data;
        });
      })
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

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearError();
    if (!input.files || !input.files[0]) { showError("Choose an X-ray image first."); return; }
    classify(input.files[0], toggle.checked,
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

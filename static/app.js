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
  var previewUrl = null;

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

  function setText(id, text) { document.getElementById(id).textContent = text; }

  function showResult(data) {
    setText("label", data.label);
    setText("prob-covid", data.probabilities.Covid.toFixed(3));
    setText("prob-normal", data.probabilities.Normal.toFixed(3));
    document.getElementById("bar-covid").value = data.probabilities.Covid;
    document.getElementById("bar-normal").value = data.probabilities.Normal;
    setText("threshold", data.threshold.toFixed(3));
    setText("model-name", data.model.name);
    setText("model-sha", data.model.sha256.slice(0, 12));
    setText("inference-ms", data.inference_ms.toFixed(1));
    // HEATMAP HOOK: when the "Show heatmap" toggle is on, request /predict?explain=true and
    // set document.getElementById("heatmap").src = "data:image/png;base64," + data.heatmap_png.
    resultEl.hidden = false;
  }

  input.addEventListener("change", function () {
    clearError();
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

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearError();
    if (!input.files || !input.files[0]) { showError("Choose an X-ray image first."); return; }
    var body = new FormData();
    body.append("file", input.files[0]);
    var headers = {};
    if (keyInput) { headers["X-API-Key"] = keyInput.value; }
    button.disabled = true;
    statusEl.textContent = "Classifying...";
    fetch("/predict", { method: "POST", body: body, headers: headers })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) {
            var message = (data.error && data.error.message) || ("Request failed (" + response.status + ").");
            throw new Error(message);
          }
          return data;
        });
      })
      .then(showResult)
      .catch(function (err) { resultEl.hidden = true; showError(err.message); })
      .finally(function () { button.disabled = false; statusEl.textContent = ""; });
  });
}());

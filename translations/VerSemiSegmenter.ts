<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="en_US">
<context>
    <name>VerSemiSegmenter</name>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>
Based on the VerSemi method (&lt;a href="https://arxiv.org/abs/2311.11686"&gt;arXiv:2311.11686&lt;/a&gt;).
Uses PyTorch, MONAI and SimpleITK. Sample data: Medical Segmentation Decathlon (CC BY-SA 4.0).
</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>
Segment many anatomical structures with ONE task-prompted 3D model trained with VerSemi
(semi-supervised learning over several partially labeled datasets plus unlabeled scans).
Choose a volume and a model, tick the structures, and click Apply. The model runs in a background
process (progress, Cancel); the result is a segmentation with named, coloured segments carrying
SNOMED CT terminology. The Review section walks a pseudo-label review folder case by case
(highest review score first): edit, then save the refined label or reject the case.
&lt;b&gt;Research use only: not for clinical use&lt;/b&gt; (the default model's weights are CC BY-NC-SA 4.0; the
licence, intended use and model card are shown once, for acceptance, before a model's first
segmentation). With every structure ticked, only those trained on the scan's modality run. See the
&lt;a href="https://github.com/versemi/SlicerVerSemiSegmenter/blob/main/docs/SLICER.md"&gt;documentation&lt;/a&gt;.
</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source> (all: those that fit the scan)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source> Nothing found for: {empty_segments} (kept as empty segments).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source> Warning: {warning}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>"Create new segmentation" adds a new segmentation next to the input volume. Choosing an existing segmentation REPLACES all its segments (you are asked to confirm).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>A folder made by 'versemi pseudolabel' (it holds manifest.json).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>A model from the VerSemi catalogue, an imported model, or a checkpoint file on this computer ("Browse local checkpoint...").</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Apply</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Cancel</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Cancelled; nothing was added to the scene.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Cancelling a running segmentation</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Cancelling...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Cannot read the review: {exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Case</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Checking PyTorch and GPU...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Choose a review folder and click Open.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Clear all</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Could not install VerSemi's Python packages:
{error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Create new segmentation</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Crop (ROI):</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Delete every model of the model cache (asks first; models shipped with versemi stay).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Delete the selected model file from the VerSemi model cache.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Device:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Done in {seconds:.0f} s: {count} segments in '{name}'.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Download</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Download cancelled.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Download failed.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Download failed:
{error_message}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Download the selected catalogue model (checked against its SHA-256) into the VerSemi model cache.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Downloading {key}...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Drag the ROI box's faces onto the structure, then click Apply.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Edit the open case's segmentation in the Segment Editor.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Export DICOM SEG...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Export the result as a DICOM Segmentation (SEG) of the input's DICOM series, through Slicer's DICOM export dialog.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Failed (see the error message).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Failed to open the Segment Editor:
{exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Failed to place the ROI box:
{exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Failed to start the model download:
{exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Failed to start the segmentation:
could not check PyTorch and the GPU (see the log).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Failed to start the segmentation:
{exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Filter structures...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Fit ROI to volume</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Highest review score first. Double-click a case to open it.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Input and model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Input volume:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Install</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Install the Python packages VerSemi needs into Slicer (PyTorch through the PyTorch extension, MONAI, versemi...). Lists exactly what will change and asks first; runs in the background.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Installation cancelled.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Installed: {installed}.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Load the highest-scored pending case (an open case is skipped and stays pending).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Mark the case as not worth fixing (stays unlabeled for training), then load the next case.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Model cache</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Model downloaded and verified.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Model:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Next case</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Not started.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Not started: the model's licence and intended use were not accepted.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Open</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Open folder</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Options</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Output</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Packages not installed.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Packages that Slicer had already loaded were updated. Restart Slicer now to use them?</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Place an ROI box around the whole input volume (a new one, or the selected one), then drag its faces in the views onto the structure and click Apply.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>PyTorch is needed: install the 'PyTorch' extension from the Extensions Manager, restart Slicer, and try again.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Quality:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Refresh</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Reject</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Reject reason:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Remove</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Reopen</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Replace ALL segments of '{name}' with the new result?
(Choose 'Create new segmentation' to keep them.)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Review</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Review folder:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Reviewing a tiny folder: next case, save refined, reject</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Run the segmentation in the background (the button becomes Cancel while it runs).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Run the segmentation in the background.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Save refined label</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Score</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Segment Editor</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Segment only inside this ROI box (faster, and what models trained on crops around a structure expect, e.g. the hippocampus in a whole-head MRI). "Whole volume": no cropping.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Segmentation failed:
{error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Segmentation:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Segmenting a small volume with a tiny VerSemi model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Segmenting the bundled sample data with the default model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Select a model to see its card.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Select all</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Select none</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Set the selected rejected or refined case back to pending (a refined label stays the label to edit).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Show only the structures whose name contains this text.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Show the model cache folder in the file manager.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Size</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Starting ({describe})...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Status</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Stop the download or the package installation (a pip step that is installing finishes first, so no package is left half-installed).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Store the segments as the case's refined label (a new file), then load the next case.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Structures to segment</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Take back the last rejection: the case's previous status and refined label come back.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Test passed</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>The scan to segment (a scalar volume, e.g. CT or MR).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Tick every structure shown (the filter applies).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Tick the structures to segment. One model pass serves all ticked structures. The selection is remembered per model.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>To segment: </source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Undo</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Untick every structure shown (the filter applies).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Updated by</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>VerSemi Segmenter</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>VerSemi's Python packages are needed {reason}:
{exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>VerSemi's packages are ready.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>Whole volume</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>auto: a CUDA GPU if available, else an Apple GPU (MPS), else the CPU. A GPU that runs out of memory falls back to the CPU.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>cannot run: {exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>full: the model's own resolution. fast: twice the voxel spacing, about 8x faster and lighter on memory, coarser borders.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>reason for rejecting (optional)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>segmentation did not finish within {timeout} s</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>select a model</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>select an input volume</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>select an input volume first</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>the versemi package is neither installed nor bundled in {resources}/versemi-package</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>tick at least one structure</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>will use: (checking PyTorch and GPU...)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.ui"/>
        <source>will use: (checking...)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>will use: (known once VerSemi's packages are installed)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>{count} of {count2}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>{name} skipped: {skipped}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>{status}... (Slicer stays usable)</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.catalogue</name>
    <message>
        <location filename="../VerSemiSegmenter/catalogue.py"/>
        <source>'versemi models list' failed: {last_line}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/catalogue.py"/>
        <source>'versemi models remove {spec}' failed: {last_line}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/catalogue.py"/>
        <source>cannot run {command}: {exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/catalogue.py"/>
        <source>unexpected output of 'versemi models list --json': {exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/catalogue.py"/>
        <source>{name}  (held-out Dice {dice:.1f} %)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/catalogue.py"/>
        <source>{name}  (no held-out Dice)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/catalogue.py"/>
        <source>{name}  (union of all targets)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/catalogue.py"/>
        <source>{path}: checkpoint file not found</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.dependencies</name>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>

Slicer's own packages (numpy, SimpleITK, VTK, pip) and PyTorch are not changed. Install now?</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>- versemi {version} (bundled with this extension, no download)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>Cancelling after this step: {step}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>Checking what pip would install</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>Install now? This downloads several hundred MB and can take a few minutes; Slicer stays usable meanwhile.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>Installing PyTorch ({requirement})</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>Installing light-the-torch (the PyTorch extension's installer)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>Installing versemi {version}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>Installing {names}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>It is installed by the PyTorch extension's installer, which needs first:</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>PyTorch is not installed:
{describe}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>PyTorch {value} after the install, but versemi needs {requirement}: install it in the PyTorch Utils module, restart Slicer and try again.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>VerSemi Segmenter needs PyTorch:

</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>VerSemi Segmenter will install these Python packages into Slicer:

</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>installation cancelled</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>installing VerSemi's packages would change packages that Slicer or the PyTorch extension provide ({value}); nothing was installed. Update Slicer (and PyTorch in the PyTorch Utils module), or install a matching versemi release.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>is missing</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>required packages are not installed:
</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>the VerSemi backend is not installed and testing mode installs nothing; missing:
</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>unexpected pip installation report (missing {exc})</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>{pyproject}: no version in [project]</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>{report}: pip wrote no installation report ({exc})</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dependencies.py"/>
        <source>{source}:{number}: unsupported requirement {line!r} (use name or name&gt;=version)</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.device</name>
    <message>
        <location filename="../VerSemiSegmenter/device.py"/>
        <source>CUDA selected, but no CUDA GPU is available to torch</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/device.py"/>
        <source>CUDA selected, but torch {torch_version} is a CPU-only build although an NVIDIA GPU is present: reinstall PyTorch with CUDA (PyTorch Utils module)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/device.py"/>
        <source>MPS selected, but the Apple GPU backend is not available to torch or cannot run 3D convolutions</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.dicom_export</name>
    <message>
        <location filename="../VerSemiSegmenter/dicom_export.py"/>
        <source>'{name}' was not loaded from DICOM, so a DICOM SEG has no series to refer to. Load the scan with the DICOM module and segment it again.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dicom_export.py"/>
        <source>Segment a volume first: the export writes the result as DICOM SEG.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/dicom_export.py"/>
        <source>Slicer writes DICOM SEG with the QuantitativeReporting extension: install it from the Extensions Manager and restart Slicer. (Or run 'versemi predict --output-format dicom-seg' on the DICOM folder.)</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.panel</name>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>1 model installed</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Cancel (keep editing)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Cannot use {label}: {error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Case {case} changed after you opened it: {changes}.

Your label was saved as revision {revision} without replacing the newer one, so nothing is lost. What now?</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Could not read the model cache:
{error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Could not read the model cache: {error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Could not remove every model:
{error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Could not remove {key}:
{error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to close the open case</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to keep your label</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to load the newer label</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to load the next case</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to open case {case}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to open the review folder</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to open the review folder:
choose a review folder first.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to read model {key}:
{error}

Choose another model or checkpoint file.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to reject the case</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to reopen case {case}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to save the refined label:
{error}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to show the case</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Failed to undo</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Keep mine on top</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Leave case {case} without saving? Your unsaved edits are discarded; {work} stays as it is.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Listing VerSemi models...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Load the newer label</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Loaded the newer label of {case}; your edits are revision {revision}.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>No model found: choose '{bROWSE_ITEM_TEXT}' or install one (see the documentation).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>No model has been downloaded or imported into the model cache yet.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Not installed yet: click Download (SHA-256 verified), or import a file with 'versemi models import'.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Reading the model cache...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Reading {path}...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Reject case {case}? It will not be used for training. Your unsaved edits are discarded.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Rejected {case}. Undo takes it back.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Remove every model from the model cache ({size})?

{models}

They can be downloaded or imported again later.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Remove {key} ({size_text}) from the model cache? It can be downloaded or imported again later.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Removed {keys}.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Removing {count} models...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Removing {key}...</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Reopened {case}: it is pending again.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Saved {case} as {path}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Saved {case} as {path} (on top of the newer label)</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>The model cache holds no model to remove (models shipped with versemi stay).</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Training will no longer use {work}. The file stays on disk and Undo brings it back.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>Undone: {case} is {status} again.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>VerSemi's Python packages are needed to use this model: installing them asks first.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>VerSemi's Python packages are not installed yet.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>VerSemi's Python packages are not installed yet: click Install (asks first, then lists the models), or choose a checkpoint file.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>the model's pseudo-label</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>the refined label saved by {user} at {time}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>to review pseudo-labels</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>unknown</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>{action} by {user} at {time}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>{count} models installed</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>{installed}, {size} in the model cache.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>{key} is not in the model cache (it ships with versemi or was chosen as a local file), so it is not removed from here.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>{key} was not removed.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>{list_error}

Local checkpoints can still be used ('{bROWSE_ITEM_TEXT}'); the list is read again the next time you open the module.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/panel.py"/>
        <source>{what}:
{error}</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.parameters</name>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>ROI box {box} must be six voxel indices x0,y0,z0,x1,y1,z1 with 0 &lt;= start &lt; end</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>no input volume selected</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>no model selected</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>no structure (prompt) selected; tick at least one</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>prompt names cannot contain commas: {prompts}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>threads must be at least 1, got {threads}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>unknown device {device!r}; choose one of {dEVICES}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>unknown output mode {output_mode!r}; choose one of {oUTPUT_MODES}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/parameters.py"/>
        <source>unknown quality {quality!r}; choose one of {qUALITIES}</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.pipeline</name>
    <message>
        <location filename="../VerSemiSegmenter/pipeline.py"/>
        <source>the job was not started</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/pipeline.py"/>
        <source>versemi predict did not report the label table beside {output}</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.process</name>
    <message>
        <location filename="../VerSemiSegmenter/process.py"/>
        <source>this call was already started</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/process.py"/>
        <source>this runner was already started</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.review</name>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>. Nothing left to review.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>Editing {case_id}. </source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>Slicer could not export '{name}' to a labelmap</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>exported labelmap has shape {shape}, the image {dims}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>no case is open to {action}: click 'Next case' first</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>segments {unknown} are not in the review's label table {value}: rename them to a label name or delete them</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>two segments are named {name!r}: merge them or rename one</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>{path}: cannot read the case image</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/review.py"/>
        <source>{where}: no label table (neither a pseudo-label sidecar nor manifest 'labels')</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.roi</name>
    <message>
        <location filename="../VerSemiSegmenter/roi.py"/>
        <source>'{name}' is under a non-linear transform; harden it (Transforms module) first</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/roi.py"/>
        <source>ROI '{name}' covers {value} voxel(s) of volume '{volume}' along axis {value2}; make it at least {mIN_VOXELS} voxels thick</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/roi.py"/>
        <source>ROI '{name}' has no size yet: place it (or click 'Fit ROI to volume') before Apply</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/roi.py"/>
        <source>ROI '{name}' lies outside volume '{volume}': move it over the volume, or choose 'Whole volume'</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/roi.py"/>
        <source>volume '{volume}' has no image data</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.sampledata</name>
    <message>
        <location filename="../VerSemiSegmenter/sampledata.py"/>
        <source>sample data not found in {value} nor in the checkout's examples/data</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/sampledata.py"/>
        <source>unknown sample {node_name!r}; known: {value}</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.segmentation_import</name>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>cannot add an empty segment for {name!r}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>terminology code contains a reserved character (~ or ^): {parts}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{labelmap_path}: Slicer could not import the labelmap as segments</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{labelmap_path}: the label table lists no labels</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{path}: cannot read label table: {exc}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{path}: cannot read labelmap</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{path}: label table not found</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{path}: label values {unknown} are not in the label table</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{sidecar_path}: the label table lists no labels</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{source}: no 'labels' list</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{where} is not an object</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{where}: 'color' must be [r, g, b] in 0-255, got {color_raw!r}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{where}: 'snomed' needs 'code' and 'meaning'</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{where}: duplicate label value {value}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{where}: empty name</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{where}: label value must be positive, got {value}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/segmentation_import.py"/>
        <source>{where}: needs 'value' (int), 'name' and 'color' ({exc})</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.selftest</name>
    <message>
        <location filename="../VerSemiSegmenter/selftest.py"/>
        <source>cannot create the test checkpoint {path}:
{stderr}</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/selftest.py"/>
        <source>review round trip, {step}: </source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>VerSemiSegmenterLib.volume_export</name>
    <message>
        <location filename="../VerSemiSegmenter/volume_export.py"/>
        <source>'{name}' has no image data</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/volume_export.py"/>
        <source>'{name}' has {numberOfScalarComponents} components per voxel; select a single-channel (scalar) volume</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/volume_export.py"/>
        <source>'{name}' is a label map; select an image volume</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/volume_export.py"/>
        <source>'{name}' is a single slice ({x} x {y} x {z} voxels); VerSemi segments 3D volumes</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/volume_export.py"/>
        <source>'{name}' is frame {index} of {count} of sequence '{browser}': only this frame is segmented.</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/volume_export.py"/>
        <source>no input volume selected</source>
        <translation type="unfinished"></translation>
    </message>
    <message>
        <location filename="../VerSemiSegmenter/volume_export.py"/>
        <source>{path}: cannot write volume '{name}'</source>
        <translation type="unfinished"></translation>
    </message>
</context>
<context>
    <name>qSlicerAbstractCoreModule</name>
    <message>
        <location filename="../VerSemiSegmenter/VerSemiSegmenter.py"/>
        <source>Segmentation</source>
        <translation type="unfinished"></translation>
    </message>
</context>
</TS>

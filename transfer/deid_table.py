"""DICOM PS3.15 Annex E Table E.1-1 (Application Level Confidentiality Profile Attributes) as data.

Edition
    :data:`EDITION` names the edition the table was taken from and is written into
    De-identification Method (0012,0063) by :mod:`mftp.transfer.deid`. The rows below are the
    standard's own Table E.1-1 as NEMA published it as the "current" edition on 2025-06-24; we
    name that edition ``2025b``. It is newer than 2024b (it has the 2025 rows, e.g. Gender
    Identity Sequence (0010,0041) and Sex Parameters for Clinical Use Category Sequence
    (0010,0043)) and older than 2026c (it lacks nine rows that 2026c has). Those nine later rows
    are appended from a 2026c transcription in :data:`_LATER_ROWS` with their Basic Profile action
    only, so every option leaves them as the Basic Profile says (stricter, never weaker).
    The build machines have no access to dicom.nema.org: the edition name should be checked
    against the published standard when someone has it at hand.

Provenance (so that the cross-check against dicom-anonymizer in the tests means something)
    * The 646 rows of :data:`_TABLE` with all option columns were converted by a one-off script
      from the table that the ``idiscore`` 1.6.0 package scraped from NEMA's Part 15 page
      (``chapter_E.html``, scraped 2025-06-24). Only the facts of the standard were taken (tag,
      action code per column); names are the PS3.6 names from pydicom's data dictionary.
    * The nine rows of :data:`_LATER_ROWS` come from dicom-anonymizer's 2026c transcription.
    * dicom-anonymizer 2.1 (the cross-check in the tests) keeps its own, independent transcription
      of the Basic Profile column for 2023, 2024b and 2026c; the tests compare ours with it row by
      row, so a transcription error in either shows up as a difference.
    NEMA's DICOM standard is freely usable; no code of either package is used here.

Format
    One line per attribute: ``TAG BASIC [column=CODE ...] | Name``. TAG is eight hex digits, or a
    repeating-group pattern with ``x`` for "any hex digit" (curves ``50xxxxxx``, overlays
    ``60xx3000``). Option columns appear only where Table E.1-1 has an entry; short column names
    are the values of :class:`Column`. Private attributes (odd groups), which the table lists as
    one row "X, Retain Safe Private Option C", are handled in code: MFTP always removes them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

EDITION = "2025b"
"""Edition of PS3.15 whose Table E.1-1 the rows below are (see the module docstring)."""

STANDARD = f"DICOM PS3.15 {EDITION}"


class Action(Enum):
    """De-identification action codes of Table E.1-1a."""

    D = "D"  # replace with a non-zero-length dummy value consistent with the VR
    Z = "Z"  # replace with a zero-length value
    X = "X"  # remove
    K = "K"  # keep (sequences are still cleaned item by item)
    C = "C"  # clean: replace with values of similar meaning without identifying information
    U = "U"  # replace with a non-zero-length UID, consistent within the set of instances
    Z_D = "Z/D"  # Z unless D is required to keep the IOD valid (Type 2 vs Type 1)
    X_Z = "X/Z"  # X unless Z is required (Type 3 vs Type 2)
    X_D = "X/D"  # X unless D is required (Type 3 vs Type 1)
    X_Z_D = "X/Z/D"  # X unless Z or D is required (Type 3 vs 2 vs 1)
    X_Z_U = "X/Z/U*"  # X unless Z or replacement of the contained instance UIDs is required


class Column(Enum):
    """Columns of Table E.1-1: the Basic Profile and its options (values are our short names)."""

    BASIC = "basic"
    RETAIN_SAFE_PRIVATE = "priv"
    RETAIN_UIDS = "uids"
    RETAIN_DEVICE_IDENTITY = "dev"
    RETAIN_INSTITUTION_IDENTITY = "inst"
    RETAIN_PATIENT_CHARACTERISTICS = "pat"
    RETAIN_LONG_FULL_DATES = "full"
    RETAIN_LONG_MODIFIED_DATES = "mod"
    CLEAN_DESCRIPTORS = "desc"
    CLEAN_STRUCTURED_CONTENT = "struct"
    CLEAN_GRAPHICS = "graph"


@dataclass(frozen=True)
class Code:
    """A coded concept of CID 7050 (De-identification Method), coding scheme DCM."""

    value: str
    meaning: str
    scheme: str = "DCM"


# PS3.16 CID 7050. Checked against the codes that idiscore and other Annex E implementations carry;
# 113101 Clean Pixel Data, 113102 Clean Recognizable Visual Features, 113103 Clean Graphics,
# 113104 Clean Structured Content, 113111 Retain Safe Private and 113112 Retain Institution
# Identity exist too but are not options MFTP offers.
PROFILE_CODES: Mapping[Column, Code] = MappingProxyType(
    {
        Column.BASIC: Code("113100", "Basic Application Confidentiality Profile"),
        Column.CLEAN_DESCRIPTORS: Code("113105", "Clean Descriptors Option"),
        Column.RETAIN_LONG_FULL_DATES: Code(
            "113106", "Retain Longitudinal Temporal Information Full Dates Option"
        ),
        Column.RETAIN_LONG_MODIFIED_DATES: Code(
            "113107", "Retain Longitudinal Temporal Information Modified Dates Option"
        ),
        Column.RETAIN_PATIENT_CHARACTERISTICS: Code("113108", "Retain Patient Characteristics Option"),
        Column.RETAIN_DEVICE_IDENTITY: Code("113109", "Retain Device Identity Option"),
        Column.RETAIN_UIDS: Code("113110", "Retain UIDs Option"),
    }
)


@dataclass(frozen=True)
class Row:
    """One attribute of Table E.1-1."""

    pattern: str  # eight upper-case hex digits, or a pattern with "x" for any hex digit
    name: str
    basic: Action
    options: Mapping[Column, Action]
    later_edition: bool = False  # True for the rows taken from a later edition (see module doc)

    @property
    def tag(self) -> int | None:
        """The tag as an int, or None for a repeating-group pattern."""
        return None if "x" in self.pattern else int(self.pattern, 16)

    def matches(self, tag: int) -> bool:
        """Whether ``tag`` is this row's attribute (repeating groups included)."""
        text = f"{tag:08X}"
        return all(p in ("x", t) for p, t in zip(self.pattern, text, strict=True))


_TABLE = """
00080050 Z                         | Accession Number
00184000 X      desc=C             | Acquisition Comments
00400555 X/Z    struct=C           | Acquisition Context Sequence
00080022 X/Z    full=K mod=C       | Acquisition Date
0008002A X/Z/D  full=K mod=C       | Acquisition DateTime
00181400 X/D    desc=C             | Acquisition Device Processing Description
001811BB D      desc=C             | Acquisition Field of View Label
00189424 X      desc=C             | Acquisition Protocol Description
00080032 X/Z    full=K mod=C       | Acquisition Time
00080017 U      uids=K             | Acquisition UID
00404035 X                         | Actual Human Performers Sequence
001021B0 X      desc=C             | Additional Patient History
0040A353 X                         | Address (Trial)
00380010 X                         | Admission ID
00380020 X      full=K mod=C       | Admitting Date
00081084 X      desc=C             | Admitting Diagnoses Code Sequence
00081080 X      desc=C             | Admitting Diagnoses Description
00380021 X      full=K mod=C       | Admitting Time
00001000 X      uids=K             | Affected SOP Instance UID
00102110 X      pat=C desc=C       | Allergies
0040B034 X      full=K mod=C       | Annotation DateTime
006A0006 X      desc=C             | Annotation Group Description
006A0005 D      desc=C             | Annotation Group Label
006A0003 D      uids=K             | Annotation Group UID
00440004 X      full=K mod=C       | Approval Status DateTime
40000010 X                         | Arbitrary
00440104 D      full=K mod=C       | Assertion DateTime
00440105 X      full=K mod=C       | Assertion Expiration DateTime
04000562 D      full=K mod=C       | Attribute Modification DateTime
0040A078 X                         | Author Observer Sequence
22000005 X/Z                       | Barcode Value
300A00C3 X      desc=C             | Beam Description
300C0127 D      dev=K full=K mod=C | Beam Hold Transition DateTime
300A00DD X      desc=C             | Bolus Description
00101081 X                         | Branch of Service
0014407E X      dev=K full=K mod=C | Calibration Date
00181203 Z      dev=K full=K mod=C | Calibration DateTime
0014407C X      dev=K full=K mod=C | Calibration Time
0016004D X                         | Camera Owner Name
00181007 X      dev=K              | Cassette ID
04000115 D                         | Certificate of Signer
04000310 X      full=K mod=C       | Certified Timestamp
00120060 Z      inst=K             | Clinical Trial Coordinating Center Name
00120082 X                         | Clinical Trial Protocol Ethics Committee Approval Number
00120081 D      inst=K             | Clinical Trial Protocol Ethics Committee Name
00120020 D                         | Clinical Trial Protocol ID
00120021 Z                         | Clinical Trial Protocol Name
00120072 X      desc=C             | Clinical Trial Series Description
00120071 X                         | Clinical Trial Series ID
00120030 Z      inst=K             | Clinical Trial Site ID
00120031 Z      inst=K             | Clinical Trial Site Name
00120010 D                         | Clinical Trial Sponsor Name
00120040 D                         | Clinical Trial Subject ID
00120042 D                         | Clinical Trial Subject Reading ID
00120051 X      desc=C             | Clinical Trial Time Point Description
00120050 Z                         | Clinical Trial Time Point ID
00400310 X      desc=C             | Comments on Radiation Dose
00400280 X      desc=C             | Comments on the Performed Procedure Step
300A02EB X      desc=C             | Compensator Description
00209161 U      uids=K             | Concatenation UID
3010000F Z      desc=C             | Conceptual Volume Combination Description
30100017 Z      desc=C             | Conceptual Volume Description
30100006 U      uids=K             | Conceptual Volume UID
00403001 X                         | Confidentiality Constraint on Patient Data Description
30100013 U      uids=K             | Constituent Conceptual Volume UID
0008009D X                         | Consulting Physician Identification Sequence
0008009C Z                         | Consulting Physician's Name
0050001B X                         | Container Component ID
0040051A X      desc=C             | Container Description
00400512 D                         | Container Identifier
00700086 X                         | Content Creator's Identification Code Sequence
00700084 Z/D                       | Content Creator's Name
00080023 Z/D    full=K mod=C       | Content Date
0040A730 D      struct=C           | Content Sequence
00080033 Z/D    full=K mod=C       | Content Time
00080107 D      full=K mod=C       | Context Group Local Version
00080106 D      full=K mod=C       | Context Group Version
00180010 Z/D    desc=C             | Contrast/Bolus Agent
00181042 X      full=K mod=C       | Contrast/Bolus Start Time
00181043 X      full=K mod=C       | Contrast/Bolus Stop Time
0018A002 X      full=K mod=C       | Contribution DateTime
0018A003 X      desc=C             | Contribution Description
00102150 X                         | Country of Residence
21000040 X      full=K mod=C       | Creation Date
21000050 X      full=K mod=C       | Creation Time
0040A307 X                         | Current Observer (Trial)
00380300 X                         | Current Patient Location
50xxxxxx X      graph=C            | Curve Data
00080025 X      full=K mod=C       | Curve Date
00080035 X      full=K mod=C       | Curve Time
0040A07C X                         | Custodial Organization Sequence
FFFCFFFC X                         | Data Set Trailing Padding
0040A121 D      full=K mod=C       | Date
0040A110 X      full=K mod=C       | Date of Document or Verbal Transaction (Trial)
00181205 X      dev=K full=K mod=C | Date of Installation
00181200 X      dev=K full=K mod=C | Date of Last Calibration
0018700C X/D    dev=K full=K mod=C | Date of Last Detector Calibration
00181204 X      dev=K full=K mod=C | Date of Manufacture
00181012 X      full=K mod=C       | Date of Secondary Capture
0040A120 D      full=K mod=C       | DateTime
00181202 X      dev=K full=K mod=C | DateTime of Last Calibration
00189701 D      full=K mod=C       | Decay Correction DateTime
0018937F X      desc=C             | Decomposition Description
00082111 X      desc=C             | Derivation Description
21000140 D      dev=C              | Destination AE
0018700A X/D    dev=K              | Detector ID
3010001B Z                         | Device Alternate Identifier
00500020 X      dev=K              | Device Description
3010002D D      dev=K              | Device Label
00181000 X/Z/D  dev=K              | Device Serial Number
0016004B X      desc=C             | Device Setting Description
00181002 U      uids=K dev=K       | Device UID
04000105 D      full=K mod=C       | Digital Signature DateTime
04000100 U                         | Digital Signature UID
FFFAFFFA X                         | Digital Signatures Sequence
00209164 U      uids=K             | Dimension Organization UID
00380030 X      full=K mod=C       | Discharge Date
00380040 X      desc=C             | Discharge Diagnosis Description
00380032 X      full=K mod=C       | Discharge Time
300A079A X      desc=C             | Displacement Reference Label
4008011A X                         | Distribution Address
40080119 X                         | Distribution Name
300A0016 X      desc=C             | Dose Reference Description
300A0013 U      uids=K             | Dose Reference UID
3010006E U      uids=K             | Dosimetric Objective UID
00686226 D      full=K mod=C       | Effective DateTime
0040A034 X      full=K mod=C       | Effective Start DateTime
0040A035 X      full=K mod=C       | Effective Stop DateTime
00420011 D                         | Encapsulated Document
00189517 X/D    full=K mod=C       | End Acquisition DateTime
30100037 X      desc=C             | Entity Description
30100035 D      desc=C             | Entity Label
30100038 D      desc=C             | Entity Long Label
30100036 X      desc=C             | Entity Name
300A0676 X      desc=C             | Equipment Frame of Reference Description
00120087 X      full=K mod=C       | Ethics Committee Approval Effectiveness End Date
00120086 X      full=K mod=C       | Ethics Committee Approval Effectiveness Start Date
00102160 X      pat=K              | Ethnic Group
00102161 X      pat=K              | Ethnic Group Code Sequence
00102162 X      pat=K              | Ethnic Groups
00189804 D      full=K mod=C       | Exclusion Start DateTime
00404011 X      full=K mod=C       | Expected Completion DateTime
00080058 U      uids=K             | Failed SOP Instance UID List
0070031A U      uids=K             | Fiducial UID
00402017 Z                         | Filler Order Number / Imaging Service Request
003A032B X      desc=C             | Filter Lookup Table Description
0040A023 X      full=K mod=C       | Findings Group Recording Date (Trial)
0040A024 X      full=K mod=C       | Findings Group Recording Time (Trial)
30080054 X/D    full=K mod=C       | First Treatment Date
300A0196 X      desc=C             | Fixation Device Description
00340002 D                         | Flow Identifier
00340001 D                         | Flow Identifier Sequence
300A0072 X      desc=C             | Fraction Group Description
3010007F Z      desc=C             | Fractionation Notes
00189074 D      full=K mod=C       | Frame Acquisition DateTime
00209158 X      desc=C             | Frame Comments
00200052 U      uids=K             | Frame of Reference UID
00340007 D      full=K mod=C       | Frame Origin Timestamp
00189151 D      full=K mod=C       | Frame Reference DateTime
00189623 D      full=K mod=C       | Functional Sync Pulse
00181008 X      dev=K              | Gantry ID
00100044 X                         | Gender Identity Code Sequence
00100045 X      desc=C             | Gender Identity Comment
00100041 X                         | Gender Identity Sequence
00181005 X      dev=K              | Generator ID
00160076 X                         | GPS Altitude
00160075 X                         | GPS Altitude Ref
0016008C X                         | GPS Area Information
0016008D X      full=K mod=C       | GPS Date Stamp
00160088 X                         | GPS Dest Bearing
00160087 X                         | GPS Dest Bearing Ref
0016008A X                         | GPS Dest Distance
00160089 X                         | GPS Dest Distance Ref
00160084 X                         | GPS Dest Latitude
00160083 X                         | GPS Dest Latitude Ref
00160086 X                         | GPS Dest Longitude
00160085 X                         | GPS Dest Longitude Ref
0016008E X                         | GPS Differential
0016007B X                         | GPS DOP
00160081 X                         | GPS Img Direction
00160080 X                         | GPS Img Direction Ref
00160072 X                         | GPS Latitude
00160071 X                         | GPS Latitude Ref
00160074 X                         | GPS Longitude
00160073 X                         | GPS Longitude Ref
00160082 X                         | GPS Map Datum
0016007A X                         | GPS Measure Mode
0016008B X                         | GPS Processing Method
00160078 X                         | GPS Satellites
0016007D X                         | GPS Speed
0016007C X                         | GPS Speed Ref
00160079 X                         | GPS Status
00160077 X                         | GPS Time Stamp
0016007F X                         | GPS Track
0016007E X                         | GPS Track Ref
00160070 X                         | GPS Version ID
00700001 D      graph=C            | Graphic Annotation Sequence
0072000A D      full=K mod=C       | Hanging Protocol Creation DateTime
00081304 X      desc=C             | Histological Diagnoses Code Sequence
0040E004 X      full=K mod=C       | HL7 Document Effective Time
00404037 X                         | Human Performer's Name
00404036 X                         | Human Performer's Organization
00880200 X                         | Icon Image Sequence
00084000 X      desc=C             | Identifying Comments
00204000 X      desc=C             | Image Comments
00284000 X                         | Image Presentation Comments
00402400 X      desc=C             | Imaging Service Request Comments
003A0314 D      full=K mod=C       | Impedance Measurement DateTime
40080300 X      desc=C             | Impressions
00686270 D      full=K mod=C       | Information Issue DateTime
00080015 X      full=K mod=C       | Instance Coercion DateTime
00080012 X/D    full=K mod=C       | Instance Creation Date
00080013 X/Z/D  full=K mod=C       | Instance Creation Time
00080014 U      uids=K             | Instance Creator UID
04000600 X                         | Instance Origin Status
00080081 X      inst=K             | Institution Address
00080082 X/Z/D  inst=K             | Institution Code Sequence
00080080 X/Z/D  inst=K             | Institution Name
00081040 X      inst=K             | Institutional Department Name
00081041 X      inst=K             | Institutional Department Type Code Sequence
00189919 Z/D    full=K mod=C       | Instruction Performed DateTime
00101050 X                         | Insurance Plan Identification
30100085 X      full=K mod=C       | Intended Fraction Start Time
3010004D X/D    full=K mod=C       | Intended Phase End Date
3010004C X/D    full=K mod=C       | Intended Phase Start Date
00401011 X                         | Intended Recipients of Results Identification Sequence
300A0741 D      full=K mod=C       | Interlock DateTime
300A0742 D      desc=C             | Interlock Description
300A0783 D      desc=C             | Interlock Origin Description
40080112 X      full=K mod=C       | Interpretation Approval Date
40080113 X      full=K mod=C       | Interpretation Approval Time
40080111 X                         | Interpretation Approver Sequence
4008010C X                         | Interpretation Author
40080115 X      desc=C             | Interpretation Diagnosis Description
40080200 X                         | Interpretation ID
40080202 X                         | Interpretation ID Issuer
40080100 X      full=K mod=C       | Interpretation Recorded Date
40080101 X      full=K mod=C       | Interpretation Recorded Time
40080102 X                         | Interpretation Recorder
4008010B X      desc=C             | Interpretation Text
4008010A X                         | Interpretation Transcriber
40080108 X      full=K mod=C       | Interpretation Transcription Date
40080109 X      full=K mod=C       | Interpretation Transcription Time
00180035 X      full=K mod=C       | Intervention Drug Start Time
00180027 X      full=K mod=C       | Intervention Drug Stop Time
00083010 U      uids=K             | Irradiation Event UID
00402004 X      full=K mod=C       | Issue Date of Imaging Service Request
00402005 X      full=K mod=C       | Issue Time of Imaging Service Request
00380011 X                         | Issuer of Admission ID
00380014 X                         | Issuer of Admission ID Sequence
00120022 X                         | Issuer of Clinical Trial Protocol ID
00120073 X                         | Issuer of Clinical Trial Series ID
00120032 X                         | Issuer of Clinical Trial Site ID
00120041 X                         | Issuer of Clinical Trial Subject ID
00120043 X                         | Issuer of Clinical Trial Subject Reading ID
00120055 X                         | Issuer of Clinical Trial Time Point ID
00100021 X                         | Issuer of Patient ID
00380061 X                         | Issuer of Service Episode ID
00380064 X                         | Issuer of Service Episode ID Sequence
00400513 Z                         | Issuer of the Container Identifier Sequence
00400562 Z                         | Issuer of the Specimen Identifier Sequence
22000002 X/Z    desc=C             | Label Text
00281214 U      uids=K             | Large Palette Color Lookup Table UID
001021D0 X      full=K mod=C       | Last Menstrual Date
0016004F X      dev=K              | Lens Make
00160050 X      dev=K              | Lens Model
00160051 X      dev=K              | Lens Serial Number
0016004E X      dev=K              | Lens Specification
00500021 X      desc=C             | Long Device Description
04000404 X                         | MAC
0016002B X      desc=C             | Maker Note
0018100B U      uids=K dev=K       | Manufacturer's Device Class UID
30100043 Z      dev=K              | Manufacturer's Device Identifier
00020003 U      uids=K             | Media Storage SOP Instance UID
00102000 X      desc=C             | Medical Alerts
00101090 X                         | Medical Record Locator
00101080 X                         | Military Rank
04000550 X                         | Modified Attributes Sequence
00203403 X      full=K mod=C       | Modified Image Date
00203406 X                         | Modified Image Description
00203405 X      full=K mod=C       | Modified Image Time
00203401 X      dev=K              | Modifying Device ID
04000563 D      dev=K              | Modifying System
0040B03F X      desc=C             | Montage Channel Label
0040B03B X      desc=C             | Montage Name
30080056 X/D    full=K mod=C       | Most Recent Treatment Date
0018937B X      desc=C             | Multi-energy Acquisition Description
003A0310 U      uids=K             | Multiplex Group UID
00081060 X                         | Name of Physician(s) Reading Study
00100012 X                         | Name to Use
00100013 X                         | Name to Use Comment
00401010 X                         | Names of Intended Recipients of Results
00081000 X      dev=C              | Network ID
04000552 X                         | Nonconforming Data Element Value
04000551 X                         | Nonconforming Modified Attributes Sequence
0040A192 X      full=K mod=C       | Observation Date (Trial)
0040A032 X/D    full=K mod=C       | Observation DateTime
0040A033 X      full=K mod=C       | Observation Start DateTime
0040A402 U      uids=K             | Observation Subject UID (Trial)
0040A193 X      full=K mod=C       | Observation Time (Trial)
0040A171 U      uids=K             | Observation UID
00102180 X      desc=C             | Occupation
00081072 X/D                       | Operator Identification Sequence
00081070 X/Z/D                     | Operators' Name
00402010 X                         | Order Callback Phone Number
00402011 X                         | Order Callback Telecom Information
00402008 X                         | Order Entered By
00402009 X                         | Order Enterer's Location
04000561 X                         | Original Attributes Sequence
21000070 X      dev=C              | Originator
00120023 X                         | Other Clinical Trial Protocol IDs Sequence
00101000 X                         | Other Patient IDs
00101002 X                         | Other Patient IDs Sequence
00101001 X                         | Other Patient Names
60xx4000 X      graph=C            | Overlay Comments
60xx3000 X      graph=C            | Overlay Data
00080024 X      full=K mod=C       | Overlay Date
00080034 X      full=K mod=C       | Overlay Time
300A0760 D      full=K mod=C       | Override DateTime
00281199 U      uids=K             | Palette Color Lookup Table UID
0040A07A X                         | Participant Sequence
0040A082 Z      full=K mod=C       | Participation DateTime
00104000 X      desc=C             | Patient Comments
00100020 Z/D                       | Patient ID
300A0794 X      desc=C             | Patient Setup Photo Description
300A0650 U      uids=K             | Patient Setup UID
00380500 X      pat=C desc=C       | Patient State
00401004 X                         | Patient Transport Arrangements
300A0792 X      desc=C             | Patient Treatment Preparation Method Description
300A078E X      desc=C             | Patient Treatment Preparation Procedure Parameter Description
00101040 X                         | Patient's Address
00101010 X      pat=K              | Patient's Age
00100030 Z                         | Patient's Birth Date
00101005 X                         | Patient's Birth Name
00100032 X                         | Patient's Birth Time
00380400 X                         | Patient's Institution Residence
00100050 X                         | Patient's Insurance Plan Code Sequence
00101060 X                         | Patient's Mother's Birth Name
00100010 Z                         | Patient's Name
00100101 X                         | Patient's Primary Language Code Sequence
00100102 X                         | Patient's Primary Language Modifier Code Sequence
001021F0 X                         | Patient's Religious Preference
00100040 Z      pat=K              | Patient's Sex
00102203 X/Z    pat=K              | Patient's Sex Neutered
00101020 X      pat=K              | Patient's Size
00102155 X                         | Patient's Telecom Information
00102154 X                         | Patient's Telephone Numbers
00101030 X      pat=K              | Patient's Weight
00400243 X                         | Performed Location
00400254 X      desc=C             | Performed Procedure Step Description
00400250 X      full=K mod=C       | Performed Procedure Step End Date
00404051 X      full=K mod=C       | Performed Procedure Step End DateTime
00400251 X      full=K mod=C       | Performed Procedure Step End Time
00400253 X                         | Performed Procedure Step ID
00400244 X      full=K mod=C       | Performed Procedure Step Start Date
00404050 X      full=K mod=C       | Performed Procedure Step Start DateTime
00400245 X      full=K mod=C       | Performed Procedure Step Start Time
00400241 X      dev=C              | Performed Station AE Title
00404030 X      dev=K              | Performed Station Geographic Location Code Sequence
00400242 X      dev=K              | Performed Station Name
00404028 X      dev=K              | Performed Station Name Code Sequence
00081052 X                         | Performing Physician Identification Sequence
00081050 X                         | Performing Physician's Name
00401101 D                         | Person Identification Code Sequence
0040A123 D                         | Person Name
00100011 X                         | Person Names to Use Sequence
00401102 X                         | Person's Address
00401104 X                         | Person's Telecom Information
00401103 X                         | Person's Telephone Numbers
40080114 X                         | Physician Approving Interpretation
00081048 X                         | Physician(s) of Record
00081049 X                         | Physician(s) of Record Identification Sequence
00081062 X                         | Physician(s) Reading Study Identification Sequence
00402016 Z                         | Placer Order Number / Imaging Service Request
00181004 X      dev=K              | Plate ID
30020123 X      desc=C             | Position Acquisition Template Description
30020121 X      desc=C             | Position Acquisition Template Name
00400012 X      pat=C              | Pre-Medication
001021C0 X      pat=K              | Pregnancy Status
300A000E X      desc=C             | Prescription Description
3010007B Z      desc=C             | Prescription Notes
30100081 Z      desc=C             | Prescription Notes Sequence
00700082 X      full=K mod=C       | Presentation Creation Date
00700083 X      full=K mod=C       | Presentation Creation Time
00701101 U      uids=K             | Presentation Display Collection UID
00701102 U      uids=K             | Presentation Sequence Collection UID
00081302 X      desc=C             | Primary Diagnosis Code Sequence
00081301 X      desc=C             | Principal Diagnosis Code Sequence
30100061 X      desc=C             | Prior Treatment Dose Description
00404052 X      full=K mod=C       | Procedure Step Cancellation DateTime
0044000B X      full=K mod=C       | Product Expiration DateTime
00100015 X                         | Pronoun Code Sequence
00100016 X      desc=C             | Pronoun Comment
00181030 X/D    desc=C             | Protocol Name
00081088 X      desc=C             | Pyramid Description
00200027 X      desc=C             | Pyramid Label
00080019 U      uids=K             | Pyramid UID
300A0619 D      desc=C             | Radiation Dose Identification Label
300A0623 D      desc=C             | Radiation Dose In-Vivo Measurement Label
300A067D Z      desc=C             | Radiation GenerationMode Description
300A067C D      desc=C             | Radiation GenerationMode Label
00181078 X      full=K mod=C       | Radiopharmaceutical Start DateTime
00181072 X      full=K mod=C       | Radiopharmaceutical Start Time
00181079 X      full=K mod=C       | Radiopharmaceutical Stop DateTime
00181073 X      full=K mod=C       | Radiopharmaceutical Stop Time
300C0113 X      desc=C             | Reason for Omission Description
0040100A X      desc=C             | Reason for Requested Procedure Code Sequence
00321030 X      desc=C             | Reason for Study
3010005C Z      desc=C             | Reason for Superseding
04000565 D      desc=C             | Reason for the Attribute Modification
00402001 X      desc=C             | Reason for the Imaging Service Request
00401002 X      desc=C             | Reason for the Requested Procedure
00321066 X      desc=C             | Reason for Visit
00321067 X      desc=C             | Reason for Visit Code Sequence
00741234 X      dev=C              | Receiving AE
300A073A D      full=K mod=C       | Recorded RT Control Point DateTime
3010000B U      uids=K             | Referenced Conceptual Volume UID
0040A13A D      full=K mod=C       | Referenced DateTime
04000402 X                         | Referenced Digital Signature Sequence
300A0083 U      uids=K             | Referenced Dose Reference UID
3010006F U      uids=K             | Referenced Dosimetric Objective UID
30100031 U      uids=K             | Referenced Fiducials UID
30060024 U      uids=K             | Referenced Frame of Reference UID
00404023 U      uids=K             | Referenced General Purpose Scheduled Procedure Step Transaction UID
00081140 X/Z/U* uids=K             | Referenced Image Sequence
0040A172 U      uids=K             | Referenced Observation UID (Trial)
00380004 X                         | Referenced Patient Alias Sequence
00101100 X                         | Referenced Patient Photo Sequence
00081120 X      uids=K             | Referenced Patient Sequence
00081111 X/Z/D  uids=K             | Referenced Performed Procedure Step Sequence
04000403 X                         | Referenced SOP Instance MAC Sequence
00081155 U      uids=K             | Referenced SOP Instance UID
00041511 U      uids=K             | Referenced SOP Instance UID in File
00081110 X/Z    uids=K             | Referenced Study Sequence
300A0785 U      uids=K             | Referenced Treatment Position Group UID
00080096 X                         | Referring Physician Identification Sequence
00080092 X                         | Referring Physician's Address
00080090 Z                         | Referring Physician's Name
00080094 X                         | Referring Physician's Telephone Numbers
00102152 X                         | Region of Residence
300600C2 U      uids=K             | Related Frame of Reference UID
00400275 X      desc=C             | Request Attributes Sequence
00321070 X      desc=C             | Requested Contrast Agent
00401400 X      desc=C             | Requested Procedure Comments
00321060 X/Z    desc=C             | Requested Procedure Description
00401001 X                         | Requested Procedure ID
00401005 X                         | Requested Procedure Location
00189937 X      desc=C             | Requested Series Description
00001001 U      uids=K             | Requested SOP Instance UID
00741236 X      dev=C              | Requesting AE
00321032 X                         | Requesting Physician
00321033 X                         | Requesting Service
00189185 X      desc=C             | Respiratory Motion Compensation Technique Description
00102299 X                         | Responsible Organization
00102297 X                         | Responsible Person
40084000 X      desc=C             | Results Comments
40080118 X                         | Results Distribution List Sequence
40080040 X                         | Results ID
40080042 X                         | Results ID Issuer
00080054 X      dev=C              | Retrieve AE Title
300E0004 Z      full=K mod=C       | Review Date
300E0005 Z      full=K mod=C       | Review Time
300E0008 X/Z                       | Reviewer Name
3006004D X                         | ROI Creator Sequence
3006002D X      full=K mod=C       | ROI DateTime
30060028 X      desc=C             | ROI Description
30060038 X      desc=C             | ROI Generation Description
300600A6 Z                         | ROI Interpreter
3006004E X                         | ROI Interpreter Sequence
30060026 Z      desc=C             | ROI Name
3006002E X      full=K mod=C       | ROI Observation DateTime
30060088 X      desc=C             | ROI Observation Description
30060085 X      desc=C             | ROI Observation Label
300A0615 Z                         | RT Accessory Device Slot ID
300A0611 Z                         | RT Accessory Holder Slot ID
3010005A Z      desc=C             | RT Physician Intent Narrative
300A0006 X/D    full=K mod=C       | RT Plan Date
300A0004 X      desc=C             | RT Plan Description
300A0002 D      desc=C             | RT Plan Label
300A0003 X      desc=C             | RT Plan Name
300A0007 X/D    full=K mod=C       | RT Plan Time
30100054 D      desc=C             | RT Prescription Label
300A062A D      desc=C             | RT Tolerance Set Label
30100056 X/D    desc=C             | RT Treatment Approach Label
3010003B U      uids=K             | RT Treatment Phase UID
30080162 D      full=K mod=C       | Safe Position Exit Date
30080164 D      full=K mod=C       | Safe Position Exit Time
30080166 D      full=K mod=C       | Safe Position Return Date
30080168 D      full=K mod=C       | Safe Position Return Time
0038001A X      full=K mod=C       | Scheduled Admission Date
0038001B X      full=K mod=C       | Scheduled Admission Time
0038001C X      full=K mod=C       | Scheduled Discharge Date
0038001D X      full=K mod=C       | Scheduled Discharge Time
00404034 X                         | Scheduled Human Performers Sequence
0038001E X                         | Scheduled Patient Institution Residence
0040000B X                         | Scheduled Performing Physician Identification Sequence
00400006 X                         | Scheduled Performing Physician's Name
00400007 X      desc=C             | Scheduled Procedure Step Description
00400004 X      full=K mod=C       | Scheduled Procedure Step End Date
00400005 X      full=K mod=C       | Scheduled Procedure Step End Time
00404008 X      full=K mod=C       | Scheduled Procedure Step Expiration DateTime
00400009 X                         | Scheduled Procedure Step ID
00400011 X      dev=K              | Scheduled Procedure Step Location
00404010 X      full=K mod=C       | Scheduled Procedure Step Modification DateTime
00400002 X      full=K mod=C       | Scheduled Procedure Step Start Date
00404005 X      full=K mod=C       | Scheduled Procedure Step Start DateTime
00400003 X      full=K mod=C       | Scheduled Procedure Step Start Time
00400001 X      dev=C              | Scheduled Station AE Title
00404027 X      dev=K              | Scheduled Station Geographic Location Code Sequence
00400010 X      dev=K              | Scheduled Station Name
00404025 X      dev=K              | Scheduled Station Name Code Sequence
00321020 X      dev=K              | Scheduled Study Location
00321021 X      dev=C              | Scheduled Study Location AE Title
00321000 X      full=K mod=C       | Scheduled Study Start Date
00321001 X      full=K mod=C       | Scheduled Study Start Time
00321010 X      full=K mod=C       | Scheduled Study Stop Date
00321011 X      full=K mod=C       | Scheduled Study Stop Time
00081303 X      desc=C             | Secondary Diagnoses Code Sequence
0040B036 X      full=K mod=C       | Segment Definition DateTime
0072005E D      dev=C              | Selector AE Value
0072005F D      pat=K              | Selector AS Value
00720061 D      full=K mod=C       | Selector DA Value
00720063 D      full=K mod=C       | Selector DT Value
00720066 D      desc=C             | Selector LO Value
00720068 D      desc=C             | Selector LT Value
00720065 D                         | Selector OB Value
0072006A D                         | Selector PN Value
0072006C D      desc=C             | Selector SH Value
0072006E D      desc=C             | Selector ST Value
0072006B D      full=K mod=C       | Selector TM Value
0072006D D                         | Selector UN Value
00720071 D                         | Selector UR Value
00720070 D      desc=C             | Selector UT Value
00080021 X/D    full=K mod=C       | Series Date
0008103E X      desc=C             | Series Description
0020000E U      uids=K             | Series Instance UID
00080031 X/D    full=K mod=C       | Series Time
00380062 X      desc=C             | Service Episode Description
00380060 X                         | Service Episode ID
300A01B2 X      desc=C             | Setup Technique Description
00100046 X      pat=K              | Sex Parameters for Clinical Use Category Code Sequence
00100042 X      pat=C desc=C       | Sex Parameters for Clinical Use Category Comment
00100047 X      pat=K              | Sex Parameters for Clinical Use Category Reference
00100043 X      pat=K              | Sex Parameters for Clinical Use Category Sequence
300A01A6 X      desc=C             | Shielding Device Description
004006FA X                         | Slide Identifier
001021A0 X      pat=K              | Smoking Status
01000420 X      full=K mod=C       | SOP Authorization DateTime
00080018 U      uids=K             | SOP Instance UID
30100015 U      uids=K             | Source Conceptual Volume UID
0018936A D      full=K mod=C       | Source End DateTime
00640003 U      uids=K             | Source Frame of Reference UID
00340005 D                         | Source Identifier
00082112 X/Z/U* uids=K             | Source Image Sequence
300A0216 X      dev=K              | Source Manufacturer
04000564 Z      inst=K             | Source of Previous Values
30080105 X/Z    dev=K              | Source Serial Number
00189369 D      full=K mod=C       | Source Start DateTime
300A022C D      full=K mod=C       | Source Strength Reference Date
300A022E D      full=K mod=C       | Source Strength Reference Time
00380050 X      pat=C              | Special Needs
0040050A X                         | Specimen Accession Number
00400602 X      desc=C             | Specimen Detailed Description
00400551 D                         | Specimen Identifier
00400610 Z      struct=C           | Specimen Preparation Sequence
00400600 X      desc=C             | Specimen Short Description
00400554 U      uids=K             | Specimen UID
00189516 X/D    full=K mod=C       | Start Acquisition DateTime
00080055 X      dev=C              | Station AE Title
00081010 X/Z/D  dev=K              | Station Name
00880140 U      uids=K             | Storage Media File-set UID
30060008 Z      full=K mod=C       | Structure Set Date
30060006 X      desc=C             | Structure Set Description
30060002 D      desc=C             | Structure Set Label
30060004 X      desc=C             | Structure Set Name
30060009 Z      full=K mod=C       | Structure Set Time
00321040 X      full=K mod=C       | Study Arrival Date
00321041 X      full=K mod=C       | Study Arrival Time
00324000 X      desc=C             | Study Comments
00321050 X      full=K mod=C       | Study Completion Date
00321051 X      full=K mod=C       | Study Completion Time
00080020 Z      full=K mod=C       | Study Date
00081030 X      desc=C             | Study Description
00200010 Z                         | Study ID
00320012 X                         | Study ID Issuer
0020000D U      uids=K             | Study Instance UID
00320034 X      full=K mod=C       | Study Read Date
00320035 X      full=K mod=C       | Study Read Time
00080030 Z      full=K mod=C       | Study Time
00320032 X      full=K mod=C       | Study Verified Date
00320033 X      full=K mod=C       | Study Verified Time
00440010 X      full=K mod=C       | Substance Administration DateTime
00200200 U      uids=K             | Synchronization Frame of Reference UID
300A0054 U      uids=K             | Table Top Position Alignment UID
00182042 U      uids=K             | Target UID
0040A354 X                         | Telephone Number (Trial)
0040DB0D U      uids=K             | Template Extension Creator UID
0040DB0C U      uids=K             | Template Extension Organization UID
0040DB07 X      full=K mod=C       | Template Local Version
0040DB06 X      full=K mod=C       | Template Version
40004000 X                         | Text Comments
20300020 X                         | Text String
00100014 X                         | Third Person Pronouns Sequence
0040A122 D      full=K mod=C       | Time
0040A112 X      full=K mod=C       | Time of Document Creation or Verbal Transaction (Trial)
00181201 X      dev=K full=K mod=C | Time of Last Calibration
0018700E X/D    dev=K full=K mod=C | Time of Last Detector Calibration
00181014 X      full=K mod=C       | Time of Secondary Capture
00080201 X      full=K mod=C       | Timezone Offset From UTC
00880910 X                         | Topic Author
00880912 X                         | Topic Keywords
00880906 X                         | Topic Subject
00880904 X                         | Topic Title
00620021 U      uids=K             | Tracking UID
00081195 U      uids=K             | Transaction UID
00185011 X      dev=K              | Transducer Identification Sequence
30080024 D      full=K mod=C       | Treatment Control Point Date
30080025 D      full=K mod=C       | Treatment Control Point Time
30080250 X/D    full=K mod=C       | Treatment Date
300A00B2 X/Z    dev=K              | Treatment Machine Name
300A0608 D      desc=C             | Treatment Position Group Label
300A0609 U      uids=K             | Treatment Position Group UID
300A0700 U      uids=K             | Treatment Session UID
30100077 X/D    desc=C             | Treatment Site
300A000B X      desc=C             | Treatment Sites
3010007A Z      desc=C             | Treatment Technique Notes
30080251 X/D    full=K mod=C       | Treatment Time
300A0736 D      full=K mod=C       | Treatment Tolerance Violation DateTime
300A0734 D      desc=C             | Treatment Tolerance Violation Description
0018100A X      dev=K              | UDI Sequence
0040A124 U                         | UID
00181009 X      dev=K              | Unique Device Identifier
30100033 D      desc=C             | User Content Label
30100034 D      desc=C             | User Content Long Label
0040A352 X                         | Verbal Source (Trial)
0040A358 X                         | Verbal Source Identifier Code Sequence (Trial)
0040A030 D      full=K mod=C       | Verification DateTime
0040A088 Z                         | Verifying Observer Identification Code Sequence
0040A075 D                         | Verifying Observer Name
0040A073 D                         | Verifying Observer Sequence
0040A027 D                         | Verifying Organization
00384000 X      desc=C             | Visit Comments
003A0329 X      desc=C             | Waveform Filter Description
00189371 D      dev=K              | X-Ray Detector ID
00189373 X      dev=K              | X-Ray Detector Label
00189367 D      dev=K              | X-Ray Source ID
"""

# Rows added to Table E.1-1 after the edition above (2025c..2026c), Basic Profile action only.
_LATER_ROWS = """
00400556 X                         | Acquisition Context Description
003A020C X                         | Channel Derivation Description
003A0203 X                         | Channel Label
0040E012 X                         | Display URI
00181011 X                         | Hardcopy Creation Device ID
003A0020 X                         | Multiplex Group Label
00181010 X                         | Secondary Capture Device ID
00700006 D                         | Unformatted Text Value
0040B020 X/D                       | Waveform Annotation Sequence
"""


def _parse(text: str, *, later_edition: bool) -> list[Row]:
    rows = []
    for line in text.strip().splitlines():
        left, _, name = line.partition("|")
        pattern, basic, *options = left.split()
        if not re.fullmatch(r"[0-9A-Fx]{8}", pattern) or not name.strip():
            raise ValueError(f"bad Table E.1-1 line: {line!r}")
        parsed = {Column(column): Action(code) for column, code in (o.split("=") for o in options)}
        rows.append(Row(pattern, name.strip(), Action(basic), MappingProxyType(parsed), later_edition))
    return rows


ROWS: tuple[Row, ...] = (*_parse(_TABLE, later_edition=False), *_parse(_LATER_ROWS, later_edition=True))
"""Every row: the edition's first, then the later additions."""

BY_TAG: Mapping[int, Row] = MappingProxyType({row.tag: row for row in ROWS if row.tag is not None})
"""Rows of single attributes, by tag."""

REPEATING: tuple[Row, ...] = tuple(row for row in ROWS if row.tag is None)
"""Rows of repeating groups (curves, overlays)."""


def lookup(tag: int) -> Row | None:
    """The row of Table E.1-1 for ``tag``, or None when the table does not list it."""
    row = BY_TAG.get(tag)
    if row is None and (tag >> 24) in (0x50, 0x60):
        row = next((r for r in REPEATING if r.matches(tag)), None)
    return row


# Words that may stay in a descriptor (Series Description, Protocol Name, ...) under the Clean
# Descriptors option. The standard asks to replace identifying text with text of similar meaning;
# recognising names in free text is not feasible, so MFTP keeps a descriptor only if every word of
# it is on this list (or is a short number, a unit or a one-letter code such as T1 or B1000) and
# otherwise treats it as the Basic Profile does. Imaging vocabulary only: modalities, anatomy,
# sequences, planes, contrast, technique. Extending the list is a privacy decision.
_VOCABULARY_WORDS = """
    ABD ABDOMEN ABDO ACQ ACQUISITION ADC AIF AND ANGIO ANGIOGRAPHY ANKLE ANT ANTERIOR AORTA AORTIC
    AP APEX ARM ARTERIAL ASL AX AXIAL AXIS BARIUM BASE BH BILAT BILATERAL BLADDER BOLD BONE BONES
    BRAIN BREAST BREATHHOLD BW CALCIUM CAROTID CARDIAC CAP CE CERVICAL CHEST CINE CIRCLE CISS
    CLAVICLE COLLECTION COLON COMBINED COMPOSITE CONTRAST COR CORONAL CORONARY CT CTA CUBE CUTS
    DELAY DELAYED DENSITY DERIVED DIFFUSION DISTAL DIXON DOSE DOTAREM DUAL DWI DX DYN DYNAMIC EAR
    ELBOW ENHANCED EOVIST EQUILIBRIUM EXAM EXTREMITY FACE FACIAL FAT FEMUR FFE FIBULA FIESTA FINGER
    FLAIR FLASH FOOT FOREARM FOSSA FS FSE FUNCTIONAL FUSED FUSION GADAVIST GADOLINIUM GD GRADIENT
    GRE HAND HASTE HEAD HEART HIGH HIP HRCT HUMERUS IAC IMAGE IMAGES IN INFERIOR INITIAL INPHASE
    INTERNAL IODINE ISOVUE IV JOINT KIDNEY KIDNEYS KNEE LAT LATERAL LEFT LEG LIVER LOCALIZER
    LOCALISER LOW LOWER LT LUMBAR LUNG LUNGS MAGNEVIST MAMMO MAP MAPS MARKED MEDCOM MEDIASTINUM
    MIP MOCO MPR MPRAGE MR MRA MRCP MRI MULTIHANCE NATIVE NECK NM NON NONCONTRAST OBL OBLIQUE
    OF OMNIPAQUE OMNISCAN OPP OPPOSED ORAL ORBIT ORBITS OUT OUTPHASE PA PANCREAS PELVIS PERF
    PERFUSION PET PHASE PITUITARY PLAIN POST PORTAL POSTERIOR PRE PRIMOVIST PROHANCE PROSTATE
    PROTOCOL PROXIMAL PULMONARY RADIUS RANGE RECON RECONSTRUCTION RENAL RESAMPLED RIB RIBS RIGHT
    ROUTINE RT SAG SAGITTAL SCAN SCAPULA SCOUT SE SERIES SHOULDER SINUS SINUSES SKULL SOFT SPECT
    SPINE SPIR STANDARD STIR STUDY SUBTRACTION SUPERIOR SURVEY SWI T1 T2 TEMPORAL THIN THICK
    THORACIC THORAX THIGH THUMB TIBIA TIME TISSUE TOF TOPOGRAM TRA TRANS TRANSVERSE TSE ULNA
    ULTRAVIST UPPER US VASCULAR VENOUS VIBE VISIPAQUE VOL VOLUME W WHOLE WITH WITHOUT WO WRIST XR
    BODY LESION PRECISION CONTRAST ENHANCEMENT ARTERY VEIN VEINS ARTERIES ABDOMINAL PELVIC HEPATIC
    MIDLINE SAT SUPINE PRONE SCREENING FOLLOW UP EXPIRATION INSPIRATION HELICAL SPIRAL SEQUENCE
"""
CLEAN_VOCABULARY: frozenset[str] = frozenset(_VOCABULARY_WORDS.split())

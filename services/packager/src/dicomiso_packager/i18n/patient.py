"""What the patient reads: the hand-out, the e-mail (the same words) and the online page.

Never a diagnosis, no study description, no name in a subject line.
"""

from __future__ import annotations

PATIENT: dict[str, dict[str, str]] = {
    "handout_title": {"en": "Your medical images", "id": "Gambar medis Anda"},
    "handout_intro": {
        "en": "{org} has prepared a copy of your medical images for you.",
        "id": "{org} telah menyiapkan salinan gambar medis Anda.",
    },
    "handout_gives": {
        "en": "The link below lets you view your images online in a web browser, with "
        "nothing to install, and download them as a disc image (ISO, for a CD or USB stick) "
        "or as a ZIP file.",
        "id": "Melalui tautan di bawah ini Anda dapat melihat gambar secara daring di peramban "
        "web tanpa memasang aplikasi apa pun, serta mengunduhnya sebagai image disk (ISO, "
        "untuk CD atau flashdisk) atau sebagai berkas ZIP.",
    },
    "handout_step1": {
        "en": "Scan the code with the camera of your phone: your images open in its web "
        "browser. The link printed below leads to the same page.",
        "id": "Pindai kode ini dengan kamera ponsel Anda: gambar Anda terbuka di peramban "
        "web ponsel. Tautan yang tercetak di bawah ini menuju halaman yang sama.",
    },
    "handout_step2": {
        "en": "To keep your images, download the ISO or the ZIP file before the link "
        "expires, and bring it to your next doctor's appointment.",
        "id": "Untuk menyimpan gambar, unduh berkas ISO atau ZIP sebelum tautan kedaluwarsa, "
        "lalu bawa saat kunjungan ke dokter berikutnya.",
    },
    "handout_expiry": {
        "en": "The link works until {when}. After that, ask {org} for a new one.",
        "id": "Tautan berlaku sampai {when}. Setelah itu, mintalah tautan baru kepada {org}.",
    },
    "handout_privacy": {
        "en": "The link opens your personal health information: keep this paper safe and "
        "share the link only with people you trust. It contains no diagnosis; for the "
        "report on your images, ask your doctor.",
        "id": "Tautan ini membuka informasi kesehatan pribadi Anda: simpan kertas ini "
        "baik-baik dan bagikan tautannya hanya kepada orang yang Anda percayai. Tautan ini "
        "tidak memuat diagnosis; untuk hasil pembacaan gambar, tanyakan kepada dokter Anda.",
    },
    "handout_link": {"en": "Link", "id": "Tautan"},
    "contact_phone": {"en": "Telephone {phone}", "id": "Telepon {phone}"},
    "mail_subject": {
        "en": "Your medical images from {org} are ready",
        "id": "Gambar medis Anda dari {org} sudah siap",
    },
    "mail_hello": {"en": "Hello,", "id": "Dengan hormat,"},
    "mail_download": {
        "en": "Or download the disc image directly:",
        "id": "Atau unduh image disk secara langsung:",
    },
    "mail_file": {
        "en": "The file is {file} ({size}). It holds your images in the DICOM format, a "
        "README.TXT and an INDEX.HTM you can open in a web browser.",
        "id": "Berkasnya {file} ({size}). Isinya gambar Anda dalam format DICOM, sebuah "
        "README.TXT, dan sebuah INDEX.HTM yang dapat dibuka di peramban web.",
    },
    "mail_not_you": {
        "en": "Do not forward this message. If you did not ask for your images, please contact us.",
        "id": "Jangan teruskan pesan ini. Jika Anda tidak meminta gambar ini, mohon hubungi kami.",
    },
    "mail_regards": {"en": "Kind regards,", "id": "Hormat kami,"},
    "online_title": {"en": "Your images from {org}", "id": "Gambar Anda dari {org}"},
    "online_first": {
        "en": "The first series is open; choose another series in the list to see its images.",
        "id": "Seri pertama sudah terbuka; pilih seri lain dalam daftar untuk melihat gambarnya.",
    },
    "online_keep": {
        "en": "To keep a copy, download the disc image for a CD or USB stick (ISO), or the "
        "ZIP to open on a computer.",
        "id": "Untuk menyimpan salinan, unduh image disk untuk CD atau flashdisk (ISO), atau "
        "berkas ZIP untuk dibuka di komputer.",
    },
    "online_expiry_note": {
        "en": "This page and its downloads stop working at the time below; after that, ask "
        "{org} for a new link.",
        "id": "Halaman ini beserta unduhannya tidak berlaku lagi setelah waktu di bawah ini; "
        "setelah itu, mintalah tautan baru kepada {org}.",
    },
    "online_until": {
        "en": "This page works until {when}.",
        "id": "Halaman ini berlaku sampai {when}.",
    },
    "online_contact": {"en": "Contact: {contact}", "id": "Kontak: {contact}"},
    "online_iso": {
        "en": "Download for a CD or USB stick (ISO)",
        "id": "Unduh untuk CD atau flashdisk (ISO)",
    },
    "online_zip": {"en": "Download as ZIP", "id": "Unduh sebagai ZIP"},
    "online_disc": {
        "en": "Download disc {number} of {total} (ISO, to burn)",
        "id": "Unduh disk {number} dari {total} (ISO, untuk dibakar)",
    },
    "mail_discs": {
        "en": "The images need {count} discs. Each disc opens on its own; download and burn "
        "every one of them:",
        "id": "Gambar ini memerlukan {count} disk. Setiap disk dapat dibuka sendiri; unduh "
        "dan bakar semuanya:",
    },
    "mail_disc": {
        "en": "Disc {number} of {total} ({file}):",
        "id": "Disk {number} dari {total} ({file}):",
    },
}

"""The staff page: the HTML's texts (`index.html`'s $placeholders) and the JavaScript's."""

from __future__ import annotations

# Texts of templates/index.html, by placeholder name.
HTML: dict[str, dict[str, str]] = {
    "title": {"en": "Patient disc", "id": "Disk pasien"},
    "language": {"en": "Language", "id": "Bahasa"},
    "sign_in": {"en": "Sign in", "id": "Masuk"},
    "sign_out": {"en": "Sign out", "id": "Keluar"},
    "sign_in_idp_hint": {
        "en": "With your hospital account.",
        "id": "Dengan akun rumah sakit Anda.",
    },
    "token": {"en": "Access code (API token)", "id": "Kode akses (token API)"},
    "token_hint": {
        "en": "Kept in this browser tab only, until you close it.",
        "id": "Hanya disimpan di tab peramban ini, sampai tab ditutup.",
    },
    "studies": {"en": "1. Studies", "id": "1. Pemeriksaan"},
    "accessions": {"en": "Accession numbers", "id": "Nomor pemeriksaan (accession number)"},
    "accessions_hint": {
        "en": "One or more, separated by commas, spaces or new lines. "
        "All must belong to one patient.",
        "id": "Satu atau lebih, dipisahkan dengan koma, spasi, atau baris baru. "
        "Semuanya harus milik satu pasien.",
    },
    "email": {"en": "Patient e-mail", "id": "E-mail pasien"},
    "email_hint": {
        "en": "(optional: the link is mailed when the disc is ready)",
        "id": "(tidak wajib: tautan dikirim setelah disk selesai dibuat)",
    },
    "medium": {"en": "Medium", "id": "Media"},
    "profile_jpeg": {"en": "DVD (images as stored)", "id": "DVD (gambar sesuai aslinya)"},
    "profile_cd": {
        "en": "CD (uncompressed, most compatible)",
        "id": "CD (tanpa kompresi, paling kompatibel)",
    },
    "profile_j2k": {"en": "DVD (JPEG 2000 allowed)", "id": "DVD (JPEG 2000 diizinkan)"},
    "profile_bd_jpeg": {
        "en": "Blu-ray (images as stored)",
        "id": "Blu-ray (gambar sesuai aslinya)",
    },
    "profile_bd_j2k": {"en": "Blu-ray (JPEG 2000 allowed)", "id": "Blu-ray (JPEG 2000 diizinkan)"},
    "profile_usb_jpeg": {
        "en": "USB stick (images as stored)",
        "id": "Flashdisk (gambar sesuai aslinya)",
    },
    "profile_usb_j2k": {
        "en": "USB stick (JPEG 2000 allowed)",
        "id": "Flashdisk (JPEG 2000 diizinkan)",
    },
    "format": {"en": "Format", "id": "Format"},
    "format_iso": {"en": "ISO disc image (to burn)", "id": "Image disk ISO (untuk dibakar)"},
    "format_zip": {
        "en": "ZIP (for patients without a drive)",
        "id": "ZIP (untuk pasien tanpa pemutar CD/DVD)",
    },
    "check": {"en": "Check patient", "id": "Periksa pasien"},
    "whose": {"en": "2. Whose studies are these?", "id": "2. Milik siapa pemeriksaan ini?"},
    "col_accession": {"en": "Accession", "id": "Nomor pemeriksaan"},
    "col_name": {"en": "Patient name", "id": "Nama pasien"},
    "col_id": {"en": "Patient ID", "id": "Nomor rekam medis"},
    "col_birth": {"en": "Birth date", "id": "Tanggal lahir"},
    "col_sex": {"en": "Sex", "id": "Jenis kelamin"},
    "col_studies": {
        "en": "Studies (date, modality, description, images)",
        "id": "Pemeriksaan (tanggal, modalitas, keterangan, jumlah gambar)",
    },
    "confirm": {
        "en": "Yes, this patient: make the disc",
        "id": "Ya, pasien ini: buat disknya",
    },
    "change": {"en": "Change the numbers", "id": "Ubah nomornya"},
    "peer": {"en": "Or send these studies to a PACS", "id": "Atau kirim pemeriksaan ini ke PACS"},
    "forward": {"en": "Send to PACS", "id": "Kirim ke PACS"},
    "disc": {"en": "3. Disc", "id": "3. Disk"},
    "download": {"en": "Download", "id": "Unduh"},
    "view_online": {"en": "View online", "id": "Lihat daring"},
    "mail_to": {"en": "Send the link by e-mail", "id": "Kirim tautan lewat e-mail"},
    "mail_send": {"en": "Send by e-mail", "id": "Kirim lewat e-mail"},
    "handout": {"en": "Hand-out for the patient", "id": "Lembar untuk pasien"},
    "handout_show": {"en": "Show the hand-out to print", "id": "Tampilkan lembar untuk dicetak"},
    "print": {"en": "Print", "id": "Cetak"},
    "next_patient": {"en": "Next patient", "id": "Pasien berikutnya"},
    "recent": {"en": "Recent packages", "id": "Paket terbaru"},
    "refresh": {"en": "Refresh", "id": "Muat ulang"},
    "col_made": {"en": "Made", "id": "Dibuat"},
    "col_patient": {"en": "Patient", "id": "Pasien"},
    "col_file": {"en": "File", "id": "Berkas"},
    "col_status": {"en": "Status", "id": "Status"},
    "col_size": {"en": "Size", "id": "Ukuran"},
    "col_until": {"en": "Link valid until", "id": "Tautan berlaku sampai"},
    "col_actions": {"en": "Actions", "id": "Tindakan"},
}

# Texts the page's JavaScript shows (app.js reads them from the page: T("key", {...})).
SCRIPT: dict[str, dict[str, str]] = {
    "phase_lookup": {"en": "Checking the patient", "id": "Memeriksa data pasien"},
    "phase_retrieve": {
        "en": "Fetching the images from the PACS",
        "id": "Mengambil gambar dari PACS",
    },
    "phase_plan": {"en": "Planning the discs", "id": "Merencanakan pembagian disk"},
    "phase_build": {"en": "Building the disc image", "id": "Menyusun image disk"},
    "medium_cd_one": {"en": "{count} CD", "id": "{count} CD"},
    "medium_cd_many": {"en": "{count} CDs", "id": "{count} CD"},
    "medium_dvd_one": {"en": "{count} DVD", "id": "{count} DVD"},
    "medium_dvd_many": {"en": "{count} DVDs", "id": "{count} DVD"},
    "medium_bd_one": {"en": "{count} Blu-ray disc", "id": "{count} disk Blu-ray"},
    "medium_bd_many": {"en": "{count} Blu-ray discs", "id": "{count} disk Blu-ray"},
    "medium_usb_one": {"en": "{count} USB stick", "id": "{count} flashdisk"},
    "medium_usb_many": {"en": "{count} USB sticks", "id": "{count} flashdisk"},
    "plan": {
        "en": "{media}: the studies do not fit on one {one}. Each disc opens on its own. {discs}.",
        "id": "{media}: pemeriksaan tidak muat pada satu {one}. Setiap disk dapat dibuka sendiri. "
        "{discs}.",
    },
    "plan_disc_one": {
        "en": "Disc {number}: {studies} study, {images} images, about {size}",
        "id": "Disk {number}: {studies} pemeriksaan, {images} gambar, sekitar {size}",
    },
    "plan_disc": {
        "en": "Disc {number}: {studies} studies, {images} images, about {size}",
        "id": "Disk {number}: {studies} pemeriksaan, {images} gambar, sekitar {size}",
    },
    "disc_progress": {
        "en": "Disc {number} of {total}: {counts}",
        "id": "Disk {number} dari {total}: {counts}",
    },
    "discs_size": {"en": "{count} discs, {size}", "id": "{count} disk, {size}"},
    "download_disc": {
        "en": "Download disc {number} of {total}: {file} ({size})",
        "id": "Unduh disk {number} dari {total}: {file} ({size})",
    },
    "links_until": {
        "en": "The links work until {when}.",
        "id": "Tautan-tautan berlaku sampai {when}.",
    },
    "recent_discs": {"en": "({count} discs)", "id": "({count} disk)"},
    "phase_upload": {"en": "Uploading the disc image", "id": "Mengunggah image disk"},
    "state_queued": {"en": "Waiting to start", "id": "Menunggu giliran"},
    "state_running": {"en": "Being made", "id": "Sedang dibuat"},
    "state_succeeded": {"en": "Ready", "id": "Selesai"},
    "state_failed": {"en": "Failed", "id": "Gagal"},
    "starting": {"en": "Starting", "id": "Memulai"},
    "working": {"en": "Working", "id": "Sedang diproses"},
    "unreachable": {
        "en": "The disc service cannot be reached. Check the network connection and try "
        "again; if it keeps happening, call IT.",
        "id": "Layanan disk tidak dapat dihubungi. Periksa sambungan jaringan dan coba lagi; "
        "jika terus terjadi, hubungi bagian TI.",
    },
    "no_clerk_role": {
        "en": "Your account may not make discs here (the role clerk is needed). "
        "Auditors read the audit trail with the dicom-iso audit command.",
        "id": "Akun Anda tidak dapat membuat disk di sini (perlu peran clerk). "
        "Auditor membaca jejak audit dengan perintah dicom-iso audit.",
    },
    "sign_in_idp_first": {
        "en": "Please sign in with your hospital account first.",
        "id": "Silakan masuk terlebih dahulu dengan akun rumah sakit Anda.",
    },
    "sign_in_first": {
        "en": "Please sign in with the access code first.",
        "id": "Silakan masuk terlebih dahulu dengan kode akses.",
    },
    "http_error": {
        "en": "The server answered with an error (code {status}). Try again; if it keeps "
        "happening, call IT.",
        "id": "Server menjawab dengan galat (kode {status}). Coba lagi; jika terus terjadi, "
        "hubungi bagian TI.",
    },
    "malformed": {
        "en": 'The number "{number}" looks malformed: an examination number has no space '
        "inside and contains digits (for example MR.001). Check the number on the request "
        "form.",
        "id": 'Nomor "{number}" tampaknya salah tulis: nomor pemeriksaan tidak berisi spasi '
        "dan memuat angka (misalnya MR.001). Periksa nomor pada formulir permintaan.",
    },
    "enter_one": {
        "en": "Enter at least one accession number.",
        "id": "Masukkan sekurang-kurangnya satu nomor pemeriksaan.",
    },
    "not_checked": {"en": "Not checked: {reason}", "id": "Belum diperiksa: {reason}"},
    "sex_M": {"en": "Male", "id": "Laki-laki"},
    "sex_F": {"en": "Female", "id": "Perempuan"},
    "sex_O": {"en": "Other", "id": "Lainnya"},
    "unknown": {"en": "Unknown", "id": "Tidak diketahui"},
    "studies_unavailable": {
        "en": "Not available now: the PACS did not answer. The disc can still be made.",
        "id": "Belum tersedia: PACS tidak menjawab. Disk tetap dapat dibuat.",
    },
    "studies_not_asked": {
        "en": "Not looked up: these numbers belong to different patients.",
        "id": "Tidak dicari: nomor-nomor ini milik pasien yang berbeda.",
    },
    "no_images": {
        "en": "No images found in the PACS for this number.",
        "id": "Tidak ada gambar di PACS untuk nomor ini.",
    },
    "images": {"en": "{count} images", "id": "{count} gambar"},
    "refused": {"en": "Refused: {reason}", "id": "Ditolak: {reason}"},
    "not_started": {
        "en": "The disc was not started: {reason}",
        "id": "Pembuatan disk belum dimulai: {reason}",
    },
    "cannot_follow": {
        "en": "This disc cannot be followed: {reason}",
        "id": "Disk ini tidak dapat dipantau: {reason}",
    },
    "waiting_service": {
        "en": "Waiting for the disc service ({reason})",
        "id": "Menunggu layanan disk ({reason})",
    },
    "received": {
        "en": "{done} of {total} images received",
        "id": "{done} dari {total} gambar diterima",
    },
    "written": {
        "en": "{done} of {total} files written",
        "id": "{done} dari {total} berkas ditulis",
    },
    "failed_reason": {
        "en": "The disc could not be made: {reason}",
        "id": "Disk tidak dapat dibuat: {reason}",
    },
    "no_reason": {"en": "no reason given", "id": "tanpa keterangan"},
    # A job's reason comes from the services in English; the known ones are said for a
    # clerk first (what happened, what to do), the original follows as the details.
    "why_pacs_down": {
        "en": "the PACS (the image archive) did not answer, so the images could not be "
        "fetched. Try again in a few minutes; if it keeps happening, call IT.",
        "id": "PACS (arsip gambar) tidak menjawab, sehingga gambar tidak dapat diambil. Coba "
        "lagi beberapa menit lagi; jika terus terjadi, hubungi bagian TI.",
    },
    "why_pacs_refused": {
        "en": "the PACS (the image archive) refused the request. Call IT: this server may "
        "not be registered with the PACS.",
        "id": "PACS (arsip gambar) menolak permintaan. Hubungi bagian TI: server ini mungkin "
        "belum terdaftar di PACS.",
    },
    "why_not_found": {
        "en": "the PACS holds no images for these numbers. Check the numbers on the request "
        "form, or ask the radiology department whether the images were sent to the PACS.",
        "id": "PACS tidak menyimpan gambar untuk nomor ini. Periksa nomor pada formulir "
        "permintaan, atau tanyakan kepada bagian radiologi apakah gambarnya sudah dikirim "
        "ke PACS.",
    },
    "why_other": {
        "en": "{reason}. Try again; if it keeps happening, call IT and give them this message.",
        "id": "{reason}. Coba lagi; jika terus terjadi, hubungi bagian TI dan sampaikan pesan ini.",
    },
    "details": {"en": "Details: {reason}", "id": "Rincian: {reason}"},
    "download_file": {"en": "Download {file} ({size})", "id": "Unduh {file} ({size})"},
    "link_until": {
        "en": "The link works until {when}.",
        "id": "Tautan berlaku sampai {when}.",
    },
    "mailed": {
        "en": "The link was e-mailed to the patient.",
        "id": "Tautan sudah dikirim ke e-mail pasien.",
    },
    "mail_failed": {
        "en": "The e-mail was not sent: {reason}",
        "id": "E-mail tidak terkirim: {reason}",
    },
    "mail_sent": {
        "en": "The link was sent by e-mail (valid until {when}).",
        "id": "Tautan sudah dikirim lewat e-mail (berlaku sampai {when}).",
    },
    "mail_off": {
        "en": "Sending e-mail is not set up on this server. Give the patient the download "
        "link or the disc instead, or ask IT to set up e-mail.",
        "id": "Pengiriman e-mail belum diatur di server ini. Berikan tautan unduhan atau "
        "disknya kepada pasien, atau minta bagian TI mengatur e-mail.",
    },
    "not_answering": {"en": "not answering", "id": "tidak menjawab"},
    "not_sent_pacs": {
        "en": "Not sent to the PACS: {reason}",
        "id": "Tidak terkirim ke PACS: {reason}",
    },
    "waiting_forwarder": {
        "en": "Waiting for the sending service ({reason})",
        "id": "Menunggu layanan pengiriman ({reason})",
    },
    "forward_progress": {
        "en": "Sending: {done} of {total} images accepted by the PACS",
        "id": "Mengirim: {done} dari {total} gambar diterima PACS",
    },
    "forward_sent": {
        "en": "Sent: {done} of {total} images accepted by the PACS",
        "id": "Terkirim: {done} dari {total} gambar diterima PACS",
    },
    "forward_failed": {
        "en": "Sending to the PACS failed: {reason}",
        "id": "Pengiriman ke PACS gagal: {reason}",
    },
    "recent_unavailable": {
        "en": "The list of packages is not available: {reason}",
        "id": "Daftar paket tidak tersedia: {reason}",
    },
    "no_packages": {"en": "No packages yet.", "id": "Belum ada paket."},
    "failed_with": {"en": "Failed: {reason}", "id": "Gagal: {reason}"},
    "new_link": {"en": "New link", "id": "Tautan baru"},
    "email_button": {"en": "E-mail", "id": "E-mail"},
    "follow": {"en": "Follow", "id": "Pantau"},
    "download_until": {"en": "Download (until {when})", "id": "Unduh (sampai {when})"},
    "no_new_link": {"en": "No new link: {reason}", "id": "Tautan baru tidak dibuat: {reason}"},
    "mail_for": {"en": "E-mail address for {file}", "id": "Alamat e-mail untuk {file}"},
    "emailed": {"en": "E-mailed", "id": "Terkirim"},
    "send": {"en": "Send", "id": "Kirim"},
    "signed_in": {"en": "Signed in as {user}", "id": "Masuk sebagai {user}"},
    "handout_failed": {
        "en": "The hand-out is not available: {reason}",
        "id": "Lembar untuk pasien tidak tersedia: {reason}",
    },
    "qr_label": {
        "en": "QR code of the link to the images",
        "id": "Kode QR tautan ke gambar",
    },
}

PAGE: dict[str, dict[str, str]] = {
    **{f"html_{k}": v for k, v in HTML.items()},
    **{f"js_{k}": v for k, v in SCRIPT.items()},
}

# What the page's own endpoints answer (web.py), in the language the page asks for.
SERVER: dict[str, dict[str, str]] = {
    "unknown_one": {
        "en": "No examination with number {number} was found. Check the number on the "
        "request form.",
        "id": "Pemeriksaan dengan nomor {number} tidak ditemukan. Periksa nomor pada "
        "formulir permintaan.",
    },
    "unknown_many": {
        "en": "No examinations with the numbers {numbers} were found. Check the numbers on "
        "the request form.",
        "id": "Pemeriksaan dengan nomor {numbers} tidak ditemukan. Periksa nomor-nomor pada "
        "formulir permintaan.",
    },
    "two_patients": {
        "en": "these accession numbers belong to {patients} different patients; a disc holds "
        "the studies of one patient only: remove the ones that are not this patient's",
        "id": "nomor-nomor pemeriksaan ini milik {patients} pasien yang berbeda; satu disk "
        "hanya boleh berisi pemeriksaan satu pasien: hapus nomor yang bukan milik pasien ini",
    },
    "nth_number": {"en": "number {n} of {count}: ", "id": "nomor ke-{n} dari {count}: "},
    "bad_long": {
        "en": "the number is {length} characters long; an examination number has at most 16. "
        "Check the number on the request form.",
        "id": "nomor ini panjangnya {length} karakter; nomor pemeriksaan paling banyak 16 "
        "karakter. Periksa nomor pada formulir permintaan.",
    },
    "bad_wildcard": {
        "en": "the number contains a wildcard (* or ?), which could match other patients' "
        "studies. Enter the exact number from the request form.",
        "id": "nomor ini memuat karakter pengganti (* atau ?) yang dapat cocok dengan "
        "pemeriksaan pasien lain. Masukkan nomor yang persis sama dengan formulir "
        "permintaan.",
    },
    "bad_chars": {
        "en": "the number may hold only letters, digits, '.' and '-'. Check the number on "
        "the request form.",
        "id": "nomor hanya boleh berisi huruf, angka, '.' dan '-'. Periksa nomor pada "
        "formulir permintaan.",
    },
    # The sign-in's own pages (signin.py); the reason after them is for IT, in English.
    "signin_down_title": {"en": "Sign-in is not available", "id": "Tidak dapat masuk saat ini"},
    "signin_down": {
        "en": "The identity provider (the hospital's sign-in service) cannot be reached just "
        "now. Try again in a few minutes; if it goes on, call IT.",
        "id": "Penyedia identitas (layanan masuk rumah sakit) tidak dapat dihubungi saat ini. "
        "Coba lagi beberapa menit lagi; jika masih terjadi, hubungi bagian TI.",
    },
    "signin_failed_title": {"en": "Sign-in failed", "id": "Gagal masuk"},
    "signin_failed": {
        "en": "You are not signed in. Sign in again from the staff page.",
        "id": "Anda belum masuk. Silakan masuk lagi dari halaman staf.",
    },
    "signin_unconfigured_title": {
        "en": "Sign-in is not set up",
        "id": "Fitur masuk belum diatur",
    },
    "signin_unconfigured": {
        "en": "This server does not know the address staff reach it at. Call IT.",
        "id": "Server ini tidak mengetahui alamat yang dipakai staf untuk membukanya. Hubungi "
        "bagian TI.",
    },
    "signin_back": {"en": "Back to the staff page", "id": "Kembali ke halaman staf"},
    "signin_reason": {"en": "Reason: {reason}", "id": "Alasan: {reason}"},
}

PAGE.update({f"srv_{k}": v for k, v in SERVER.items()})

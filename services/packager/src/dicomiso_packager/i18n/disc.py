"""README.TXT and the disc's web pages (INDEX.HTM, IHE_PDI/STUDYnnn.HTM).

README.TXT is plain ASCII (PS3.12 default repertoire): the Indonesian texts need no accent.
"""

from __future__ import annotations

DISC: dict[str, dict[str, str]] = {
    "readme_title": {"en": "MEDICAL IMAGES ON THIS DISC", "id": "GAMBAR MEDIS PADA DISK INI"},
    "readme_made": {
        "en": "This disc holds medical images (DICOM format) of one patient. It was created "
        "by {who} on {day} with dicom-iso {version}.",
        "id": "Disk ini berisi gambar medis (format DICOM) milik satu pasien. Disk ini dibuat "
        "oleh {who} pada {day} dengan dicom-iso {version}.",
    },
    "readme_contents": {
        "en": "Contents: {studies} {study_word}, {series} series, {images} images ({files} DICOM "
        "files in all). Modalities: {modalities}. DICOM media profile: {profile}.",
        "id": "Isi: {studies} {study_word}, {series} seri, {images} gambar (seluruhnya {files} "
        "berkas DICOM). Modalitas: {modalities}. Profil media DICOM: {profile}.",
    },
    "none": {"en": "none", "id": "tidak ada"},
    "study_one": {"en": "study", "id": "pemeriksaan"},
    "study_many": {"en": "studies", "id": "pemeriksaan"},
    "readme_how": {"en": "HOW TO OPEN IT", "id": "CARA MEMBUKANYA"},
    "readme_step1": {
        "en": "1. For a quick look, open INDEX.HTM (in the top folder of this disc) with any "
        "web browser. It lists the studies and shows reduced preview pictures. It works "
        "without an internet connection. The previews are not of diagnostic quality.",
        "id": "1. Untuk melihat sekilas, buka INDEX.HTM (di folder teratas disk ini) dengan "
        "peramban web apa pun. Halaman itu memuat daftar pemeriksaan dan gambar pratinjau "
        "yang diperkecil, dan dapat dibuka tanpa koneksi internet. Gambar pratinjau tidak "
        "bermutu diagnostik.",
    },
    "readme_step2": {
        "en": "2. For the full images use DICOM viewing software: open the DICOMDIR file in "
        "the top folder, which indexes every image on the disc. Hospitals can import the "
        "disc from DICOMDIR into their own systems.",
        "id": "2. Untuk gambar lengkap, gunakan perangkat lunak penampil DICOM: buka berkas "
        "DICOMDIR di folder teratas, yang memuat indeks semua gambar pada disk. Rumah sakit "
        "dapat mengimpor disk ini ke sistemnya melalui DICOMDIR.",
    },
    "readme_step3_page": {
        "en": '3. To see the full images, open INDEX.HTM and click "View the images", or '
        "open {page} directly, in a current web browser (Chrome, Edge, Firefox or Safari). "
        "When it asks, choose this disc (or the folder you unzipped it into): a web page may "
        "only read the files you choose. The viewer works without an internet connection "
        "and sends nothing anywhere. Nothing on this disc starts automatically (no autorun).",
        "id": '3. Untuk melihat gambar lengkap, buka INDEX.HTM lalu klik "Lihat gambar", atau '
        "buka {page} secara langsung, di peramban web versi terbaru (Chrome, Edge, Firefox, "
        "atau Safari). Saat diminta, pilih disk ini (atau folder tempat Anda mengekstraknya): "
        "halaman web hanya boleh membaca berkas yang Anda pilih. Penampil ini bekerja tanpa "
        "koneksi internet dan tidak mengirim apa pun ke mana pun. Tidak ada yang berjalan "
        "otomatis dari disk ini (tanpa autorun).",
    },
    "readme_step3_folder": {
        "en": "3. A DICOM viewer is included in the {folder} folder. Start it yourself from "
        "there: this disc does not rely on autorun.",
        "id": "3. Penampil DICOM tersedia di folder {folder}. Jalankan sendiri dari sana: "
        "disk ini tidak memakai autorun.",
    },
    "readme_step3_none": {
        "en": "3. No viewer program is included. Nothing on this disc starts automatically "
        "(no autorun).",
        "id": "3. Disk ini tidak menyertakan program penampil. Tidak ada yang berjalan "
        "otomatis dari disk ini (tanpa autorun).",
    },
    "readme_privacy": {"en": "PRIVACY", "id": "PRIVASI"},
    "readme_keep": {
        "en": "This disc contains personal health information. Keep it safe and give it only "
        "to people you want to see it.",
        "id": "Disk ini berisi informasi kesehatan pribadi. Simpanlah baik-baik dan berikan "
        "hanya kepada orang yang Anda izinkan melihatnya.",
    },
    "readme_no_diagnosis": {
        "en": "This file and the web pages contain no diagnosis. For the report on these "
        "images, ask your doctor or {who}.",
        "id": "Berkas ini dan halaman webnya tidak memuat diagnosis. Untuk hasil pembacaan "
        "gambar ini, tanyakan kepada dokter Anda atau {who}.",
    },
    "readme_contact": {"en": "CONTACT", "id": "KONTAK"},
    "the_hospital": {"en": "the hospital", "id": "rumah sakit"},
    "web_title": {"en": "Medical images", "id": "Gambar medis"},
    "web_title_of": {"en": "Medical images - {org}", "id": "Gambar medis - {org}"},
    "web_made": {
        "en": "Created by {org} on {day} with dicom-iso {version}.",
        "id": "Dibuat oleh {org} pada {day} dengan dicom-iso {version}.",
    },
    "web_note": {
        "en": "This disc contains personal health information. The pictures on these pages "
        "are reduced previews, not of diagnostic quality; the complete images are in DICOM "
        "format (see DICOMDIR) and need a DICOM viewer. These pages contain no diagnosis.",
        "id": "Disk ini berisi informasi kesehatan pribadi. Gambar pada halaman ini adalah "
        "pratinjau yang diperkecil dan tidak bermutu diagnostik; gambar lengkapnya dalam "
        "format DICOM (lihat DICOMDIR) dan memerlukan penampil DICOM. Halaman ini tidak "
        "memuat diagnosis.",
    },
    "web_view": {"en": "View the images", "id": "Lihat gambar"},
    "web_view_note": {
        "en": "The viewer opens in this browser. It asks you once to choose this disc (or the "
        "folder you unzipped): a web page may only read the files you choose. It works "
        "without an internet connection and sends nothing anywhere.",
        "id": "Penampil terbuka di peramban ini. Anda akan diminta sekali untuk memilih disk "
        "ini (atau folder hasil ekstrak): halaman web hanya boleh membaca berkas yang Anda "
        "pilih. Penampil bekerja tanpa koneksi internet dan tidak mengirim apa pun ke mana "
        "pun.",
    },
    "web_viewer_folder": {
        "en": "A DICOM viewer is in the {folder} folder of this disc; start it from there "
        "(nothing starts automatically).",
        "id": "Penampil DICOM ada di folder {folder} pada disk ini; jalankan dari sana "
        "(tidak ada yang berjalan otomatis).",
    },
    "web_studies": {"en": "Studies on this disc", "id": "Pemeriksaan pada disk ini"},
    "web_about": {"en": "About this disc:", "id": "Tentang disk ini:"},
    "web_back": {"en": "Back to the list of studies", "id": "Kembali ke daftar pemeriksaan"},
    "web_study": {"en": "Study", "id": "Pemeriksaan"},
    "web_open": {"en": "Open", "id": "Buka"},
    "web_no_preview": {"en": "no preview", "id": "tanpa pratinjau"},
    "web_preview_of": {"en": "Preview of series {number}", "id": "Pratinjau seri {number}"},
    "web_accession": {
        "en": "Accession number: {accession}. Modalities: {modalities}.",
        "id": "Nomor pemeriksaan: {accession}. Modalitas: {modalities}.",
    },
    "col_patient": {"en": "Patient", "id": "Pasien"},
    "col_patient_id": {"en": "Patient ID", "id": "Nomor rekam medis"},
    "col_birth": {"en": "Birth date", "id": "Tanggal lahir"},
    "col_sex": {"en": "Sex", "id": "Jenis kelamin"},
    "col_date": {"en": "Date", "id": "Tanggal"},
    "col_description": {"en": "Description", "id": "Keterangan"},
    "col_modalities": {"en": "Modalities", "id": "Modalitas"},
    "col_accession": {"en": "Accession", "id": "Nomor pemeriksaan"},
    "col_series": {"en": "Series", "id": "Seri"},
    "col_modality": {"en": "Modality", "id": "Modalitas"},
    "col_images": {"en": "Images", "id": "Gambar"},
    "col_preview": {"en": "Preview", "id": "Pratinjau"},
    "col_details": {"en": "Details", "id": "Rincian"},
    "col_disc": {"en": "Disc", "id": "Disk"},
    "readme_disc": {"en": "DISC {number} OF {total}", "id": "DISK {number} DARI {total}"},
    "readme_disc_set": {
        "en": "This is disc {number} of a set of {total} discs made together for one patient. "
        "Each disc is complete on its own: its DICOMDIR, INDEX.HTM and viewer show the images "
        "on this disc. INDEX.HTM also lists what is on the other discs of the set. Keep the "
        "discs together.",
        "id": "Ini adalah disk {number} dari satu set berisi {total} disk yang dibuat bersama "
        "untuk satu pasien. Setiap disk lengkap dengan sendirinya: DICOMDIR, INDEX.HTM, dan "
        "penampilnya menunjukkan gambar pada disk ini. INDEX.HTM juga memuat daftar isi "
        "disk-disk lain dalam set ini. Simpan semua disk bersama-sama.",
    },
    "web_title_disc": {
        "en": "Medical images, disc {number} of {total} - {org}",
        "id": "Gambar medis, disk {number} dari {total} - {org}",
    },
    "web_disc": {"en": "Disc {number} of {total}", "id": "Disk {number} dari {total}"},
    "web_disc_set": {
        "en": "This disc is one of a set of {total} discs. Each disc opens on its own and "
        "shows the images on it; the list at the end of this page says what is on the other "
        "discs. Keep the discs together.",
        "id": "Disk ini adalah salah satu dari satu set berisi {total} disk. Setiap disk dapat "
        "dibuka sendiri dan menampilkan gambar yang ada di dalamnya; daftar di akhir halaman "
        "ini menunjukkan isi disk-disk lainnya. Simpan semua disk bersama-sama.",
    },
    "web_disc_of": {"en": "{number} of {total}", "id": "{number} dari {total}"},
    "web_other_discs": {
        "en": "On the other discs of this set",
        "id": "Pada disk lain dalam set ini",
    },
}

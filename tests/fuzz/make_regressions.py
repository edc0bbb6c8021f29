#!/usr/bin/python3
"""Writes the hand-made hostile inputs of tests/regressions/<target>/ (replayed by
tests/unit/test_fuzz_regressions.cpp, and seeds of the fuzzers): decompression bombs, headers and
pickles that once overflowed or hit undefined behaviour, inputs at and beyond every limit.

usage: tests/fuzz/make_regressions.py PHOTOS_DIR   (PHOTOS_DIR from scripts/fetch_test_photos.sh)
Inputs found by the fuzzers are copied into the same folders by hand (tests/fuzz/run_fuzz.sh says how).
"""
import io
import json
import os
import struct
import sys
import zipfile
import zlib

R = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'regressions') + '/'
PHOTOS = sys.argv[1]
def w(p, b):
    open(R+p,'wb').write(b)
# ---- png
def chunk(t, data): return struct.pack('>I', len(data)) + t + data + struct.pack('>I', zlib.crc32(t+data) & 0xffffffff)
sig=b'\x89PNG\r\n\x1a\n'
idat=chunk(b'IDAT', zlib.compress(b'\0'*64))
w('png/bomb_200000x200000_rgb.png', sig+chunk(b'IHDR', struct.pack('>IIBBBBB',200000,200000,8,2,0,0,0))+idat+chunk(b'IEND',b''))
w('png/bomb_100000x100000_gray16.png', sig+chunk(b'IHDR', struct.pack('>IIBBBBB',100000,100000,16,0,0,0,0))+idat+chunk(b'IEND',b''))
w('png/bomb_16384x16385_rgba_interlaced.png', sig+chunk(b'IHDR', struct.pack('>IIBBBBB',16384,16385,8,6,0,0,1))+idat+chunk(b'IEND',b''))
# image data for 1 row of 4: libpng fails inside png_read_image and longjmps out of our decoder
# (a row-pointer vector local to the decoder leaked there until it moved into the decoder's state)
row = b'\0' + b'\x80' * 12
w('png/idat_one_row_of_four.png', sig+chunk(b'IHDR', struct.pack('>IIBBBBB',4,4,8,2,0,0,0))+chunk(b'IDAT', zlib.compress(row))+chunk(b'IEND',b''))
big=struct.pack('>I',0x7ffffff0)+b'zTXt'+b'k\0\0'+zlib.compress(b'x'*1000)
w('png/chunk_length_2gb.png', sig+chunk(b'IHDR', struct.pack('>IIBBBBB',1,1,8,2,0,0,0))+big)
# ---- jpeg: a real (truncated) photo with its SOF declaring 65500x65500 and 65500x4100
d=bytearray(open(os.path.join(PHOTOS, 'truncated.jpg'),'rb').read())
sof=d.index(b'\xff\xc0')
def jpeg_dims(h,wd):
    e=bytearray(d); struct.pack_into('>HH', e, sof+5, h, wd); return bytes(e)
w('jpeg/bomb_65500x65500_truncated_photo.jpg', jpeg_dims(65500,65500))
w('jpeg/bomb_65500x4097_truncated_photo.jpg', jpeg_dims(65500,4097))
w('jpeg/zero_height_truncated_photo.jpg', jpeg_dims(0,128))
# ---- exif
w('exif/ifd_offset_past_end.bin', b'Exif\0\0II*\0'+struct.pack('<I',0xfffffff0))
w('exif/entry_count_past_end.bin', b'Exif\0\0MM\0*'+struct.pack('>I',8)+struct.pack('>H',0xffff)+b'\x01\x12\x00\x03')
w('exif/orientation_99_long.bin', b'Exif\0\0II*\0'+struct.pack('<I',8)+struct.pack('<H',1)+struct.pack('<HHIHH',0x0112,3,1,99,0)+b'\0\0\0\0')
# ---- safetensors
def st(header, data=b''):
    h=header.encode() if isinstance(header,str) else header
    return struct.pack('<Q',len(h))+h+data
w('safetensors/nested_json_100000_deep.safetensors', st('{"a":'+'['*100000+']'*100000+'}'))
w('safetensors/zero_dim_after_2e18.safetensors', st('{"t":{"dtype":"F32","shape":[4611686018427387904,2,0],"data_offsets":[0,0]}}'))
w('safetensors/header_length_2e19.safetensors', struct.pack('<Q',2**64-1)+b'{}')
w('safetensors/shape_product_overflows.safetensors', st('{"t":{"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}', b'\0'*8))
w('safetensors/long_value_in_error.safetensors', st('{"t":{"dtype":"F32","shape":"'+'x'*50000+'","data_offsets":[0,0]}}'))
# ---- user_file
meta={"format":"aesthete","format_version":"1","kind":"user","head":"seed","adapters":"true","generic_digest":"sha256:"+"a"*64}
w('user_file/no_tensors.safetensors', st(json.dumps({"__metadata__":meta})))
meta2=dict(meta); meta2['head']='x'*300
w('user_file/unknown_head.safetensors', st(json.dumps({"__metadata__":meta2,"head.0.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}), b'\0'*4))
# ---- labels
w('labels/line_of_70000_bytes.csv', b'image,score\n'+b'a'*70000+b',1\n')
w('labels/flickr_workers_nan_and_short.csv', b'worker " imagePair" " score"\n0 A1 farm1_1.jpg nan\n1 A1\n')
w('labels/flickr_means_quotes_unbalanced.csv', b'" imagePair" rating\n"farm1 farm1 0.5\n')
w('labels/nul_and_cr_only.csv', b'image,score\r\r\r\0,\0\r')
# ---- recipe
rec={"format":"aesthete-edit-recipe","version":1,"epsilon":0.4,"exposure_stops":1e300,"contrast":0,"saturation":0,"temperature":0,"tint":0,"tone_curve":[0,0,0,0]}
w('recipe/exposure_1e300.json', json.dumps(rec).encode())
w('recipe/format_is_a_number.json', b'{"format": 5, "version": 1}')
w('recipe/version_is_a_string.json', b'{"format":"aesthete-edit-recipe","version":"1"}')
w('recipe/deep_nesting.json', b'['*50000+b']'*50000)
# ---- pth: hand-written pickles in STORED zips, as torch writes them
def pth(pkl, storages):
    b=io.BytesIO()
    with zipfile.ZipFile(b,'w',zipfile.ZIP_STORED) as z:
        def put(name, data):  # fixed timestamps: the same bytes on every run
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
        put('archive/data.pkl', pkl)
        for k, v in storages.items():
            put('archive/data/' + k, v)
        put('archive/version', '3\n')
    return b.getvalue()
def U(s): s=s.encode(); return b'X'+struct.pack('<I',len(s))+s
def I(v): return b'\x8a\x08'+struct.pack('<q',v)
def tensor(cls,key,numel,offset,sizes,strides):
    p=b'ctorch._utils\n_rebuild_tensor_v2\n('
    p+=b'('+U('storage')+b'ctorch\n'+cls.encode()+b'\n'+U(key)+U('cpu')+I(numel)+b'tQ'
    p+=I(offset)+b'('+b''.join(I(x) for x in sizes)+b't('+b''.join(I(x) for x in strides)+b't\x89ccollections\nOrderedDict\n)R'
    return p+b'tR'
# a size-1 dim with a stride near 2^63 (the odometer once overflowed int64 stepping over it)
p=b'\x80\x02}'+U('x')+tensor('DoubleStorage','0',6,5,[1,2],[2**63-1,0])+b's.'
w('pth/stride_2e63_size_1_double.pth', pth(p, {'0': b'\0'*48}))
# one key repeated 5000 times with new values (Python semantics: the last wins)
p=b'\x80\x02}('+b''.join(U('k')+b'K\x01' for _ in range(5000))+U('x')+tensor('FloatStorage','0',1,0,[],[])+b'u.'
w('pth/same_key_5000_times.pth', pth(p, {'0': b'\0'*4}))
# deep MARK nesting and a long stack, then garbage
w('pth/marks_and_dups.pth', pth(b'\x80\x02'+b'('*20000+b'N'+b'2'*20000+b'.', {}))

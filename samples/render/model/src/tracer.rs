//! The scene and the ray tracer.
//!
//! A mirror sphere in the middle of a ring of five coloured spheres that bob
//! up and down, on a checkered floor, lit by a warm key light and a cool fill
//! light (both casting shadows) under a sky gradient. The camera circles the
//! scene once over the animation. Everything is `f64` arithmetic with `+ − × ÷`
//! and `sqrt`; the frame's angles go through `libm` (`sin`, `cos`, `tan`,
//! `floor`), so a pixel's value is the same natively and in WebAssembly.

use std::f64::consts::PI;

use crate::params::{Rect, RenderParams};
use crate::vec3::Vec3;

/// Rays closer than this to their origin do not hit anything (no acne).
const T_MIN: f64 = 1e-7;
/// Secondary rays start this far off the surface, along its normal.
const OFFSET: f64 = 1e-5;
/// Vertical field of view, in degrees.
const FOV_DEGREES: f64 = 45.0;
/// The camera's distance from the scene's vertical axis and its height.
const ORBIT_RADIUS: f64 = 7.0;
const ORBIT_HEIGHT: f64 = 2.6;
/// Ambient light level.
const AMBIENT: f64 = 0.08;

#[derive(Clone, Copy, Debug)]
struct Material {
    color: Vec3,
    reflectivity: f64,
    specular: f64,
}

#[derive(Clone, Copy, Debug)]
struct Sphere {
    center: Vec3,
    radius: f64,
    material: Material,
}

#[derive(Clone, Copy, Debug)]
struct Light {
    position: Vec3,
    color: Vec3,
}

/// What a ray hit.
enum Surface {
    Sphere(usize),
    Floor,
}

struct Hit {
    t: f64,
    surface: Surface,
}

/// One frame of the animation: the camera and the objects where they are in
/// that frame.
#[derive(Clone, Debug)]
pub struct Scene {
    spheres: Vec<Sphere>,
    lights: [Light; 2],
    eye: Vec3,
    forward: Vec3,
    right: Vec3,
    up: Vec3,
    half_width: f64,
    half_height: f64,
    width: f64,
    height: f64,
    frame: u32,
    samples: u32,
    max_depth: u32,
}

const RING_COLORS: [Vec3; 5] = [
    Vec3::new(0.9, 0.15, 0.1),
    Vec3::new(0.95, 0.6, 0.1),
    Vec3::new(0.2, 0.75, 0.25),
    Vec3::new(0.15, 0.35, 0.9),
    Vec3::new(0.6, 0.2, 0.8),
];

impl Scene {
    /// The scene of frame `frame` of the job described by `params`.
    pub fn new(params: &RenderParams, frame: u32) -> Self {
        let frames = params.frames.max(1);
        let phase = 2.0 * PI * f64::from(frame % frames) / f64::from(frames);

        let mut spheres = vec![Sphere {
            center: Vec3::new(0.0, 1.1, 0.0),
            radius: 1.1,
            material: Material {
                color: Vec3::new(0.92, 0.92, 0.96),
                reflectivity: 0.75,
                specular: 0.9,
            },
        }];
        for (i, &color) in RING_COLORS.iter().enumerate() {
            let k = i as f64;
            let angle = 2.0 * PI * k / 5.0;
            let radius = 0.45;
            let bob = 0.5 * (1.0 + libm::sin(2.0 * phase + 1.3 * k));
            spheres.push(Sphere {
                center: Vec3::new(
                    2.6 * libm::cos(angle),
                    radius + 0.4 * bob,
                    2.6 * libm::sin(angle),
                ),
                radius,
                material: Material {
                    color,
                    reflectivity: 0.2,
                    specular: 0.6,
                },
            });
        }

        let angle = phase + 0.35;
        let eye = Vec3::new(
            ORBIT_RADIUS * libm::sin(angle),
            ORBIT_HEIGHT,
            ORBIT_RADIUS * libm::cos(angle),
        );
        let target = Vec3::new(0.0, 0.8, 0.0);
        let forward = (target - eye).normalized();
        let right = forward.cross(Vec3::new(0.0, 1.0, 0.0)).normalized();
        let up = right.cross(forward);
        let width = f64::from(params.width);
        let height = f64::from(params.height);
        let half_height = libm::tan(FOV_DEGREES * PI / 360.0);
        let half_width = half_height * width / height;

        Self {
            spheres,
            lights: [
                Light {
                    position: Vec3::new(5.0, 7.0, 4.0),
                    color: Vec3::new(0.95, 0.88, 0.75),
                },
                Light {
                    position: Vec3::new(-6.0, 4.5, -3.0),
                    color: Vec3::new(0.3, 0.38, 0.6),
                },
            ],
            eye,
            forward,
            right,
            up,
            half_width,
            half_height,
            width,
            height,
            frame,
            samples: params.samples_per_pixel.max(1),
            max_depth: params.max_depth,
        }
    }

    /// The colour of pixel (x, y), quantised: the mean of its samples.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let mut sum = Vec3::default();
        for s in 0..self.samples {
            let (jx, jy) = if self.samples == 1 {
                (0.5, 0.5)
            } else {
                jitter(self.frame, x, y, s)
            };
            let u = (2.0 * (f64::from(x) + jx) / self.width - 1.0) * self.half_width;
            let v = (1.0 - 2.0 * (f64::from(y) + jy) / self.height) * self.half_height;
            let direction = (self.forward + self.right * u + self.up * v).normalized();
            sum = sum + self.trace(self.eye, direction, 0);
        }
        let color = sum * (1.0 / f64::from(self.samples));
        [quantize(color.x), quantize(color.y), quantize(color.z)]
    }

    /// Renders `rect` of the frame as packed RGB8 rows into `out`
    /// (`rect.w × rect.h × 3` bytes).
    pub fn render_into(&self, rect: Rect, out: &mut [u8]) {
        assert_eq!(out.len(), rect.area() * 3, "tile buffer size");
        let row_len = rect.w as usize * 3;
        for (dy, row) in out.chunks_exact_mut(row_len).enumerate() {
            self.render_row(rect.x, rect.y + dy as u32, row);
        }
    }

    /// Renders `row.len() / 3` pixels of row `y` from column `x`.
    pub fn render_row(&self, x: u32, y: u32, row: &mut [u8]) {
        for (dx, px) in row.chunks_exact_mut(3).enumerate() {
            px.copy_from_slice(&self.pixel(x + dx as u32, y));
        }
    }

    fn nearest(&self, origin: Vec3, direction: Vec3) -> Option<Hit> {
        let mut best: Option<Hit> = None;
        let mut best_t = f64::INFINITY;
        for (i, sphere) in self.spheres.iter().enumerate() {
            if let Some(t) = hit_sphere(sphere, origin, direction)
                && t < best_t
            {
                best_t = t;
                best = Some(Hit {
                    t,
                    surface: Surface::Sphere(i),
                });
            }
        }
        if let Some(t) = hit_floor(origin, direction)
            && t < best_t
        {
            best = Some(Hit {
                t,
                surface: Surface::Floor,
            });
        }
        best
    }

    fn occluded(&self, origin: Vec3, direction: Vec3, distance: f64) -> bool {
        self.spheres
            .iter()
            .any(|s| hit_sphere(s, origin, direction).is_some_and(|t| t < distance))
            || hit_floor(origin, direction).is_some_and(|t| t < distance)
    }

    fn trace(&self, origin: Vec3, direction: Vec3, depth: u32) -> Vec3 {
        let Some(hit) = self.nearest(origin, direction) else {
            return sky(direction);
        };
        let point = origin + direction * hit.t;
        let (normal, material) = match hit.surface {
            Surface::Sphere(i) => {
                let s = &self.spheres[i];
                ((point - s.center) * (1.0 / s.radius), s.material)
            }
            Surface::Floor => (Vec3::new(0.0, 1.0, 0.0), floor_material(point)),
        };
        let start = point + normal * OFFSET;

        let mut color = material.color * AMBIENT;
        for light in &self.lights {
            let to_light = light.position - point;
            let distance = to_light.length();
            let l = to_light * (1.0 / distance);
            let lambert = normal.dot(l);
            if lambert <= 0.0 || self.occluded(start, l, distance) {
                continue;
            }
            color = color + material.color.hadamard(light.color) * lambert;
            let half = (l - direction).normalized();
            let nh = normal.dot(half);
            if nh > 0.0 {
                color = color + light.color * (material.specular * pow64(nh));
            }
        }

        if material.reflectivity > 0.0 && depth < self.max_depth {
            let reflected = direction - normal * (2.0 * direction.dot(normal));
            let mirror = self.trace(start, reflected, depth + 1);
            color = color * (1.0 - material.reflectivity) + mirror * material.reflectivity;
        }

        if let Surface::Floor = hit.surface {
            // Fade the floor into the sky with distance.
            let fog = hit.t / 60.0;
            let fog = if fog < 1.0 { fog } else { 1.0 };
            color = color * (1.0 - fog) + sky(direction) * fog;
        }
        color
    }
}

fn floor_material(point: Vec3) -> Material {
    let parity = (libm::floor(point.x) as i64 + libm::floor(point.z) as i64) & 1;
    Material {
        color: if parity == 0 {
            Vec3::new(0.85, 0.84, 0.8)
        } else {
            Vec3::new(0.12, 0.13, 0.16)
        },
        reflectivity: 0.15,
        specular: 0.2,
    }
}

fn sky(direction: Vec3) -> Vec3 {
    let t = if direction.y > 0.0 { direction.y } else { 0.0 };
    let horizon = Vec3::new(0.78, 0.84, 0.95);
    let zenith = Vec3::new(0.22, 0.42, 0.85);
    horizon * (1.0 - t) + zenith * t
}

/// The nearest t > T_MIN with origin + t·direction on the sphere
/// (direction has length 1).
#[inline]
fn hit_sphere(sphere: &Sphere, origin: Vec3, direction: Vec3) -> Option<f64> {
    let oc = origin - sphere.center;
    let b = oc.dot(direction);
    let c = oc.dot(oc) - sphere.radius * sphere.radius;
    let discriminant = b * b - c;
    if discriminant < 0.0 {
        return None;
    }
    let root = discriminant.sqrt();
    let near = -b - root;
    if near > T_MIN {
        return Some(near);
    }
    let far = -b + root;
    (far > T_MIN).then_some(far)
}

/// Where a ray meets the floor, the plane y = 0.
#[inline]
fn hit_floor(origin: Vec3, direction: Vec3) -> Option<f64> {
    if direction.y == 0.0 {
        return None;
    }
    let t = -origin.y / direction.y;
    (t > T_MIN).then_some(t)
}

/// x⁶⁴ by repeated squaring.
#[inline]
fn pow64(x: f64) -> f64 {
    let mut p = x;
    for _ in 0..6 {
        p *= p;
    }
    p
}

/// A 64-bit mix of the SplitMix64 generator's finaliser.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The offset in [0, 1)² of sample `s` of pixel (x, y) of frame `frame`: a
/// hash of the four, so it is the same whichever task renders the pixel.
pub fn jitter(frame: u32, x: u32, y: u32, s: u32) -> (f64, f64) {
    let h = mix(mix(mix(mix(u64::from(frame)) ^ u64::from(x)) ^ u64::from(y)) ^ u64::from(s));
    let unit = |bits: u64| (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    (unit(h), unit(mix(h)))
}

/// A linear colour channel to an 8-bit sRGB-ish value: clamped to [0, 1],
/// gamma 2 (a square root), rounded. NaN gives 0.
pub fn quantize(channel: f64) -> u8 {
    let c = if channel > 0.0 {
        if channel < 1.0 { channel } else { 1.0 }
    } else {
        0.0
    };
    (c.sqrt() * 255.0 + 0.5) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_clamps_and_rounds() {
        assert_eq!(quantize(-1.0), 0);
        assert_eq!(quantize(f64::NAN), 0);
        assert_eq!(quantize(0.0), 0);
        assert_eq!(quantize(1.0), 255);
        assert_eq!(quantize(7.0), 255);
        assert_eq!(quantize(0.25), 128); // sqrt = 0.5 → 127.5 → 128
    }

    #[test]
    fn jitter_is_in_the_unit_square_and_varies() {
        let mut seen = std::collections::HashSet::new();
        for s in 0..16 {
            let (a, b) = jitter(3, 10, 20, s);
            assert!((0.0..1.0).contains(&a) && (0.0..1.0).contains(&b));
            seen.insert((a.to_bits(), b.to_bits()));
        }
        assert_eq!(seen.len(), 16);
        assert_eq!(jitter(1, 2, 3, 4), jitter(1, 2, 3, 4));
        assert_ne!(jitter(1, 2, 3, 4), jitter(2, 1, 3, 4));
    }

    #[test]
    fn ray_sphere_intersection_matches_geometry() {
        let sphere = Sphere {
            center: Vec3::new(0.0, 0.0, -5.0),
            radius: 1.0,
            material: floor_material(Vec3::default()),
        };
        let t = hit_sphere(&sphere, Vec3::default(), Vec3::new(0.0, 0.0, -1.0)).unwrap();
        assert_eq!(t, 4.0);
        // From inside, the far side.
        let t = hit_sphere(&sphere, sphere.center, Vec3::new(1.0, 0.0, 0.0)).unwrap();
        assert_eq!(t, 1.0);
        assert!(hit_sphere(&sphere, Vec3::default(), Vec3::new(0.0, 1.0, 0.0)).is_none());
        assert_eq!(
            hit_floor(Vec3::new(0.0, 2.0, 0.0), Vec3::new(0.0, -1.0, 0.0)),
            Some(2.0)
        );
        assert!(hit_floor(Vec3::new(0.0, 2.0, 0.0), Vec3::new(0.0, 1.0, 0.0)).is_none());
    }

    #[test]
    fn camera_circles_the_scene_at_a_fixed_distance() {
        let p = RenderParams::default();
        let first = Scene::new(&p, 0);
        for frame in 0..p.frames {
            let s = Scene::new(&p, frame);
            let horizontal = Vec3::new(s.eye.x, 0.0, s.eye.z).length();
            assert!((horizontal - ORBIT_RADIUS).abs() < 1e-12);
            assert!((s.forward.length() - 1.0).abs() < 1e-12);
            assert!(s.forward.dot(s.right).abs() < 1e-12);
            if frame > 0 {
                assert_ne!(s.eye, first.eye);
            }
        }
        // A full turn: frame `frames` looks like frame 0.
        assert_eq!(Scene::new(&p, p.frames).eye, first.eye);
    }

    #[test]
    fn the_centre_sees_the_mirror_sphere_and_the_top_sees_sky() {
        let p = RenderParams {
            width: 64,
            height: 48,
            max_depth: 0,
            ..RenderParams::default()
        };
        let s = Scene::new(&p, 0);
        // Top-left corner: sky, brighter towards the horizon, blue.
        let [r, g, b] = s.pixel(0, 0);
        assert!(b > r && b > g, "{r} {g} {b}");
        // Shadows: a point on the floor right under the mirror sphere's
        // edge, towards the key light's opposite side, gets no key light.
        let under = Vec3::new(-0.5, 0.0, -0.4);
        let key = s.lights[0].position - under;
        assert!(s.occluded(
            under + Vec3::new(0.0, OFFSET, 0.0),
            key.normalized(),
            key.length()
        ));
    }
}
